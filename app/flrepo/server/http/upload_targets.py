"""The aerOS upload path a resumable upload completes (`Upload-Metadata: target /model/base/base2`),
served by that path's own PUT route.

A target is resolved with the application's routes, so every file PUT route the API has is a target and
its path parameters are validated by the route itself. The target's PUT is then run in place, in two
ways, with the caller's credentials:

- a dry run when the upload is created: the route checks the caller's role, its parameters and that
  the item exists (and, for weights, that the configuration id matches); the run stops where the PUT
  would start reading the file;
- the completion: the same route attaches the already stored file exactly as a PUT does (its checks
  again, the switch-then-delete of the old file, the audit entry).

The PUT's request-body reader (`http.uploads.incoming_file`) hands such a run the stored file instead
of reading the body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message

from flrepo.server.http.uploads import PRESTORED, streams_upload
from flrepo.server.middleware.audit import AuditTrail
from flrepo.server.storage.blobs import IncomingFile, StoredFile

MAX_TARGET = 1024
# The credentials a target's PUT sees: the caller's own (a task token too, for a checkpoint's file).
FORWARDED = {b"authorization", b"x-api-key", b"x-task-token"}


class TargetAccepted(Exception):
    """A dry run got as far as reading the file: the target takes uploads from this caller."""


@dataclass
class Prestored:
    """What a run of a target's PUT gets as its file: the stored one, or (dry run) none at all."""

    stored: StoredFile | None
    filename: str | None = None

    def incoming(self) -> IncomingFile:
        if self.stored is None:
            raise TargetAccepted
        return IncomingFile(self.filename, self.stored.content_type, _no_bytes(), stored=self.stored)


async def _no_bytes() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


@dataclass
class Answer:
    """What the target's PUT answered."""

    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)

    def header(self, name: bytes) -> str | None:
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == name), None)


def target_path(target: str) -> tuple[str, str]:
    """The decoded path and its percent-encoded form; HTTPException 422 when it is no plain path."""
    if not target.startswith("/") or len(target) > MAX_TARGET or any(c in target for c in "?#"):
        raise HTTPException(422, "the upload's target must be an API path such as /model/NAME/VERSION")
    try:
        path = unquote(target, errors="strict")
    except UnicodeDecodeError:
        raise HTTPException(422, "the upload's target is not valid percent-encoded UTF-8") from None
    path = path.rstrip("/") or "/"
    return path, quote(path, safe="/")


def find_route(app: Any, path: str) -> BaseRoute:
    """The file PUT route that serves `path`, as the router would choose it; 422 for any other path."""
    scope = {"type": "http", "method": "PUT", "path": path, "root_path": ""}
    route = _first_match(app.router.routes, scope)
    if isinstance(route, APIRoute) and "PUT" in (route.methods or ()) and streams_upload(route):
        return route
    raise HTTPException(422, f"{path!r} is not a file upload path (/model/NAME/VERSION, /strategy/NAME, ...)")


def _first_match(routes: list[BaseRoute], scope: dict[str, Any]) -> BaseRoute | None:
    for route in routes:
        # Included routers are kept as one entry by newer FastAPI versions (without a prefix here).
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found = _first_match(inner.routes, scope)
            if found is not None:
                return found
            continue
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
    return None


async def run_put(
    request: Request, target: str, file: Prestored, record: Callable[[dict[str, Any]], Awaitable[None]] | None = None
) -> Answer | None:
    """Run the target's PUT route with the caller's credentials and `file` as its body: its answer, or
    None when a dry run was accepted. With `record`, the run is audited like a PUT from outside."""
    path, raw = target_path(target)
    find_route(request.app, path)
    outer = request.scope
    # A new request, not a copy of the outer one's routing state (FastAPI keeps some in the scope).
    scope: dict[str, Any] = {
        key: value
        for key, value in outer.items()
        if key in ("type", "asgi", "http_version", "scheme", "server", "client", "root_path", "app")
        or key.startswith("starlette.")
    }
    scope.update(
        method="PUT",
        path=path,
        raw_path=raw.encode(),
        query_string=b"",
        headers=[(k, v) for k, v in outer["headers"] if k.lower() in FORWARDED],
        state={"request_id": outer.get("state", {}).get("request_id", "")},
    )
    scope[PRESTORED] = file
    answer = Answer()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    handle: ASGIApp = request.app.router
    if record is not None:
        handle = AuditTrail(handle, record=record)
    try:
        # What FastAPI's outermost middleware gives every request (its routes insist on it); the run
        # enters the router directly, below this service's middleware.
        async with AsyncExitStack() as stack:
            scope["fastapi_middleware_astack"] = stack
            await handle(scope, receive, send)
    except TargetAccepted:
        return None
    return answer
