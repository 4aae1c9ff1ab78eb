"""Request ids, JSON logs, Prometheus metrics, the request body limit and the audit trail.

One pure-ASGI middleware does all of it, so streamed uploads and downloads pass through
untouched (Starlette's BaseHTTPMiddleware would buffer and slow them).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("flrepo.access")
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# File uploads stream to GridFS under their own limit; every other body is small JSON.
_UPLOAD_PATHS = re.compile(
    r"^/(model/(?!meta/)[^/]+/[^/]+|training-results/[^/]+/[^/]+/[^/]+/[^/]+|strategy/[^/]+|transformation/[^/]+)$"
)
MUTATIONS = {"POST", "PUT", "PATCH", "DELETE"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being served."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record is emitted, not when the handler was made:
    a command run in-process (tests, embedding code) may have swapped and since closed it."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str, json_logs: bool) -> None:
    handler = StderrHandler()
    handler.setFormatter(
        JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    bytes_in: Counter
    bytes_out: Counter
    db_errors: Counter

    @classmethod
    def create(cls) -> Metrics:
        # A registry per app keeps several apps in one process (tests) from colliding.
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter("flrepo_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry),
            latency=Histogram(
                "flrepo_http_request_duration_seconds",
                "Time to the end of the response",
                ["method", "route"],
                registry=registry,
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            ),
            bytes_in=Counter("flrepo_uploaded_bytes", "Request body bytes received", registry=registry),
            bytes_out=Counter("flrepo_downloaded_bytes", "Response body bytes sent", registry=registry),
            db_errors=Counter("flrepo_database_errors", "Database errors by kind", ["kind"], registry=registry),
        )


class _BodyTooLarge(HTTPException):
    # An HTTPException, because FastAPI turns any other error while reading a body into a 400.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class RequestContext:
    """Request id, body limit, metrics, access log and audit for every HTTP request."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, audit: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.audit = audit  # async callable(entry) or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        method, path = scope["method"], scope["path"]
        started = time.perf_counter()
        status = 500
        response_started = False
        limited = not (method == "PUT" and _UPLOAD_PATHS.match(path))
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if limited and received > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        async def write_audit() -> None:
            route = getattr(scope.get("route"), "path", None)
            if not (self.audit and method in MUTATIONS and status < 400 and route):
                return
            principal = scope.get("state", {}).get("principal")
            await self.audit(
                {
                    "time": datetime.now(UTC),
                    "key_id": getattr(principal, "key_id", None),
                    "role": getattr(getattr(principal, "role", None), "label", None),
                    "method": method,
                    "path": path,
                    "route": route,
                    "status": status,
                    "request_id": request_id,
                }
            )

        async def tagging_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                # Before the client hears of the change: GET /audit right after it shows it.
                await write_audit()
            elif message["type"] == "http.response.body":
                self.metrics.bytes_out.inc(len(message.get("body", b"")))
            await send(message)

        try:
            declared = headers.get(b"content-length", b"")
            if limited and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise _BodyTooLarge(self.max_body_bytes)
            await self.app(scope, counting_receive, tagging_send)
        except _BodyTooLarge as exc:
            if response_started:
                raise
            await _send_json(tagging_send, exc.status_code, str(exc.detail))
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(method, label, str(status)).inc()
            self.metrics.latency.labels(method, label).observe(elapsed)
            self.metrics.bytes_in.inc(received)
            principal = scope.get("state", {}).get("principal")
            key_id = getattr(principal, "key_id", None)
            log.info(
                "%s %s %s",
                method,
                path,
                status,
                extra={
                    "fields": {
                        "method": method,
                        "path": path,
                        "route": label,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "key_id": key_id,
                    }
                },
            )
            request_id_var.reset(token)


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
