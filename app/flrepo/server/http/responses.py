"""A JSON error answer written straight to ASGI `send`, for middleware that answers before (or instead
of) the application."""

from __future__ import annotations

import json

from starlette.types import Send


async def send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
