"""Flower's Control- or Fleet-only SuperLink middleware, each on the requests of its scope only:
a request out of scope goes straight to the next app, one in scope through the middleware."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("flwr")

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flrepo.fl.message import scoped_middleware
from flrepo.fl.message.scoped_middleware import Scoped

SEEN: list[str] = []


class Recording(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        SEEN.append(request.url.path)
        response = await call_next(request)
        response.headers["x-recorded"] = "1"
        return response


async def endpoint(request: Request) -> Response:
    return Response(b"ok")


def get(app: Any, path: str) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path,
        "raw_path": path.encode(), "query_string": b"", "headers": [], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2), "scheme": "http", "root_path": "", "state": {},
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_a_scoped_middleware_sees_the_requests_of_its_scope_only():
    def fleet(method: str, path: str) -> bool:
        return path.startswith("/v1/fleet/")

    routes = [Route(p, endpoint, methods=["POST"]) for p in ("/v1/fleet/pull-object", "/v1/runtime/pull-object")]
    app = Starlette(routes=routes, middleware=[Middleware(Scoped, Recording, fleet)])
    SEEN.clear()
    assert get(app, "/v1/runtime/pull-object")[::2] == (200, b"ok")
    assert SEEN == []
    status, headers, body = get(app, "/v1/fleet/pull-object")
    assert (status, body, headers.get("x-recorded")) == (200, b"ok", "1")
    assert SEEN == ["/v1/fleet/pull-object"]


def test_flowers_list_keeps_its_order_with_the_six_scoped_and_the_two_others_as_they_were():
    from flwr.superlink import main

    flowers = list(main._get_middleware())
    ours = scoped_middleware.scoped(flowers)
    assert len(ours) == len(flowers)
    for theirs, mine in zip(flowers, ours, strict=True):
        if theirs.cls in scoped_middleware.scopes():
            assert mine.cls is Scoped and mine.args[0] is theirs.cls
        else:
            assert mine is theirs
    assert sum(m.cls is Scoped for m in ours) == 6
