"""The audit trail: every successful change (POST/PUT/PATCH/DELETE answered below 400 on a known
route) is recorded with who made it. Written when the response starts, before the client hears of
the change, so GET /audit right after it shows it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flrepo.server.middleware.request_context import principal_of

MUTATIONS = {"POST", "PUT", "PATCH", "DELETE"}
Recorder = Callable[[dict[str, Any]], Awaitable[None]]


class AuditTrail:
    def __init__(self, app: ASGIApp, *, record: Recorder) -> None:
        self.app = app
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATIONS:
            await self.app(scope, receive, send)
            return

        async def auditing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._maybe_record(scope, message["status"])
            await send(message)

        await self.app(scope, receive, auditing_send)

    async def _maybe_record(self, scope: Scope, status: int) -> None:
        route = getattr(scope.get("route"), "path", None)
        if status >= 400 or not route:
            return
        request_id = scope.get("state", {}).get("request_id", "")
        await self.record(entry(principal_of(scope), scope["method"], scope["path"], route, status, request_id))


def entry(principal: Any, method: str, path: str, route: str, status: int, request_id: str) -> dict[str, Any]:
    """One change as the trail records it (a finished resumable upload records its target's PUT with it)."""
    return {
        "time": datetime.now(UTC),
        "key_id": getattr(principal, "key_id", None),
        "role": getattr(getattr(principal, "role", None), "label", None),
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "request_id": request_id,
    }
