"""`/model/` is served as `/model`, in place.

aerOS 1.1.0's routes answered with and without a trailing slash (its clients call `GET /model/`).
Starlette's way to do that, a 307 redirect, builds the new URL from the request's `Host` header, so
an answer would carry whatever host a client (or a proxy it fooled) sent. Rewriting the path before
routing serves the same resource with nothing built from request headers.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class TrailingSlash:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
            raw = scope.get("raw_path")
            if isinstance(raw, bytes):
                scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)
