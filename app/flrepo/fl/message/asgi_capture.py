"""Reading a request's body and an answer on their way through an ASGI app, for the SuperLink's
wrappers that decide by what a Flower request asked or what Flower answered
(flrepo.fl.message.held_pulls, flrepo.fl.message.complete_pushes)."""

from __future__ import annotations

from typing import Any

Scope = dict[str, Any]


async def body(receive: Any) -> bytes:
    """The request's whole body."""
    data = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return data
        data += message.get("body", b"")
        if not message.get("more_body", False):
            return data


def replaying(data: bytes, receive: Any) -> Any:
    """A `receive` that gives `data` (the body read already), then whatever the client sends next
    (its disconnect)."""
    given = False

    async def receiving() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": data, "more_body": False}
        return await receive()

    return receiving


async def answered(app: Any, scope: Scope, receive: Any, send: Any) -> tuple[int, bytes]:
    """Run `app`, passing its answer on as it goes; the answer's status and body."""
    status = 0
    chunks: list[bytes] = []

    async def sending(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
        await send(message)

    await app(scope, receive, sending)
    return status, b"".join(chunks)
