"""JSON request bodies sent without a `Content-Type`, as aerOS-era scripts send them.

aerOS 1.1.0 (FastAPI 0.83) parsed a body without `Content-Type` as JSON, and scripts written for
it do `requests.post(url, data=json.dumps(body))`, which sends none. Current FastAPI refuses such
a body (`strict_content_type`) because a browser page can send one cross-site without a CORS
preflight. Here it is parsed as JSON only when the request did not come from a browser: browsers
mark every cross-site request with `Origin` and `Sec-Fetch-*` headers, scripts send neither.
So aerOS scripts keep working and a web page still cannot write through a visitor's network.

Every JSON body is then read strictly (`strict_json`): what no store can hold is a 422.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, MutableMapping
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from flrepo.server.http.strict_json import StrictJSONRequest

_BROWSER_HEADERS = (b"origin", b"sec-fetch-site", b"sec-fetch-mode")


def untyped_script_body(scope: MutableMapping[str, Any]) -> bool:
    """True for a request without `Content-Type` that no browser sent."""
    names = {name.lower() for name, _ in scope.get("headers", [])}
    return b"content-type" not in names and not names.intersection(_BROWSER_HEADERS)


class JsonBodyRoute(APIRoute):
    """A route whose JSON body is read strictly and may come without `Content-Type` from scripts
    (not from browsers)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:  # uploads and bodiless routes read the request themselves
            return handler

        async def route_handler(request: Request) -> Response:
            scope = request.scope
            if untyped_script_body(scope):
                scope = {**scope, "headers": [*scope["headers"], (b"content-type", b"application/json")]}
            return await handler(StrictJSONRequest(scope, request.receive))

        return route_handler
