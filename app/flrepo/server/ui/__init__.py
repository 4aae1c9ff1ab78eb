"""The web console, served by the API itself at /ui: plain HTML, CSS and JavaScript shipped in this
package (no Node at run time, no CDN, no fonts fetched), which call the API with the key the user
enters once per browser session (sessionStorage, sent as `X-API-Key`; no cookies).

The page and its assets hold no data and need no key; everything shown comes from the API under the
user's key and role. A Content-Security-Policy keeps the page to this origin (no request leaves it).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
# 'self' only: no script, style, font, image or fetch from anywhere else; inline SVG is markup.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": POLICY, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def install(app: FastAPI) -> None:
    """GET /ui (the page; its views are #fragments) and /ui/static/ (its script and style)."""
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    @app.get("/ui", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)
