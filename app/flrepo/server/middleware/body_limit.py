"""JSON bodies over FLREPO_MAX_BODY_BYTES are refused with 413; file uploads stream to GridFS under
their own limit (FLREPO_MAX_UPLOAD_BYTES), checked by the store.

Which requests are uploads is decided by the matched route (its OpenAPI entry marks it), not by
the path's shape, so a model named `meta` uploads like any other. Bodies are only read after
routing, so the route is known by the first receive.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flrepo.server.http.file_uploads import streams_upload
from flrepo.server.http.responses import send_json


class BodyTooLarge(HTTPException):
    # An HTTPException, because FastAPI turns any other error while reading a body into a 400.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        received = 0
        checked = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, checked
            if not checked:
                checked = True
                if not streams_upload(scope.get("route")) and declared.isdigit() and int(declared) > limit:
                    raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request" and not streams_upload(scope.get("route")):
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watching_send)
        except BodyTooLarge as exc:
            # Raised outside FastAPI's own handling (e.g. a body read by another middleware).
            if started:
                raise
            await send_json(send, exc.status_code, str(exc.detail))
