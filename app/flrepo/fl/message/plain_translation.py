"""Flower's two per-request middlewares, protobuf translation and error translation, as plain ASGI.

Every request to Flower 1.42's SuperLink and SuperNode HTTP APIs passes Flower's
`ProtobufTranslationMiddleware` (it parses the protobuf request into the request's state and
serializes the handler's protobuf result) and `http_error_translator` (it turns a `FlowerError`
into its catalogued JSON error), both Starlette `BaseHTTPMiddleware`s: a task, a task group and
memory streams per request, about half a millisecond each here, on the ~1,500 requests of a
3-site, 5-round task (scoped_middleware.py took the six others off the requests they do not act
on).

`PlainProtobufTranslation` and `PlainErrorTranslation` run Flower's own code for the decisions —
the middleware's `dispatch` and the translator function, with a `call_next` that runs the next
app directly — so what a request gets is Flower's answer, bit for bit; only the
`BaseHTTPMiddleware` machinery is gone. `plain(middleware)` swaps them into a middleware list,
in place and order. tests/fl/test_flower_internals.py pins the Flower code they rely on.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

Scope = dict[str, Any]
Message = dict[str, Any]


class PlainErrorTranslation:
    """`http_error_translator` around the next app: a response streams straight through; an
    exception raised before the response started gets Flower's translation of it."""

    def __init__(self, app: Any) -> None:
        from flwr.supercore.error.http import http_error_translator

        self.app = app
        self.translator = http_error_translator

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:
            if started:  # as with Flower's: nothing can be translated once the response began
                raise
            response = await self.translator(Request(scope, receive), _raising(error))
            await response(scope, receive, send)


def _raising(error: Exception) -> Any:
    """A `call_next` that raises what the next app raised, for Flower's translator to catch."""

    async def call_next(_: Request) -> Response:
        raise error

    return call_next


class PlainProtobufTranslation:
    """`ProtobufTranslationMiddleware.dispatch` around the next app, which runs in this task: a
    protobuf route's placeholder response is collected and handed to `dispatch`, which answers with
    the handler's protobuf result (or lets a JSON error through); any other request goes straight
    to the next app."""

    def __init__(self, app: Any) -> None:
        from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES, ProtobufTranslationMiddleware

        self.app = app
        self.routes = PROTOBUF_REQUEST_TYPES  # Flower's own table, the one `dispatch` looks in
        # Flower's middleware, for its `dispatch` only: its ASGI entry (the BaseHTTPMiddleware
        # machinery) is never called.
        self.flower = ProtobufTranslationMiddleware(app)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope.get("method"), scope.get("path")) not in self.routes:
            await self.app(scope, receive, send)  # dispatch hands these on untouched too
            return
        request = Request(scope, receive)

        async def call_next(_: Request) -> Response:
            return await self._collected(scope, _replaying(await request.body(), receive))

        response = await self.flower.dispatch(request, call_next)
        await response(scope, receive, send)

    async def _collected(self, scope: Scope, receive: Any) -> Response:
        """The next app's response, whole (a protobuf route's is a placeholder or a JSON error)."""
        start: Message = {}
        body: list[bytes] = []

        async def collect(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, collect)
        response = Response(b"".join(body), status_code=int(start.get("status", 500)))
        response.raw_headers = list(start.get("headers", []))
        return response


def _replaying(body: bytes, receive: Any) -> Any:
    """`receive` for the next app: the body `dispatch` read, once, then the client's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return replay


def plain(middleware: list[Middleware]) -> list[Middleware]:
    """The list with Flower's two translation middlewares made plain ASGI, in place and order."""
    from flwr.supercore.error.http import http_error_translator
    from flwr.supercore.protobuf.translation import ProtobufTranslationMiddleware
    from starlette.middleware.base import BaseHTTPMiddleware

    swapped: list[Middleware] = []
    for m in middleware:
        if m.cls is ProtobufTranslationMiddleware and not m.args and not m.kwargs:
            swapped.append(Middleware(PlainProtobufTranslation))  # type: ignore[arg-type]
        elif m.cls is BaseHTTPMiddleware and m.kwargs.get("dispatch") is http_error_translator and not m.args:
            swapped.append(Middleware(PlainErrorTranslation))  # type: ignore[arg-type]
        else:
            swapped.append(m)
    return swapped


def install_superlink() -> None:
    """Make the SuperLink app that `flwr.superlink.main.create_app` builds use the plain ones."""
    from flwr.superlink import main

    flowers = main._get_middleware
    main._get_middleware = lambda: plain(list(flowers()))  # type: ignore[assignment]


def install_supernode() -> None:
    """Make the SuperNode app that `flwr.supernode.main.create_app` builds use the plain ones (the
    SuperNode adds them to the app it created; the stack is built at its first request)."""
    from flwr.supernode import main

    create = main.create_app

    def create_app(*args: Any, **kwargs: Any) -> Any:
        app = create(*args, **kwargs)
        app.user_middleware[:] = plain(list(app.user_middleware))
        return app

    main.create_app = create_app
