"""Every HTTP request gets an id (echoed as X-Request-ID and in every log line of the request),
an access-log line (with the client's address, user agent and byte counts), and its count, latency,
sizes and in-flight time in the metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flrepo.logs import request_id_var
from flrepo.server.http.responses import send_json
from flrepo.server.metrics import Metrics

log = logging.getLogger("flrepo.access")

# Longer user agents are cut: a log line's size is not the client's to choose.
MAX_USER_AGENT = 512
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_label(scope: Scope) -> str:
    """The matched route's path template (bounded label values), or "unmatched"."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


def principal_of(scope: Scope) -> Any:
    """Who made the request (set by authorization), or None."""
    return scope.get("state", {}).get("principal")


@dataclass
class _Exchange:
    """What one request did, gathered while it runs."""

    status: int = 500
    received: int = 0
    sent: int = 0


def _head_size(scope: Scope) -> int:
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return target + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


class RequestContext:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, max_headers: int = 100, max_header_bytes: int = 32 * 1024
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        exchange = _Exchange()
        started = time.perf_counter()
        self.metrics.in_flight.inc()

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.received += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                exchange.sent += len(message.get("body", b""))
            await send(message)

        try:
            # The parser stops buffering an incomplete head past the size limit (flrepo.server.serving);
            # a head that arrived whole in one read is measured here, with the number of its lines.
            if len(scope["headers"]) > self.max_headers:
                await send_json(tagging_send, 431, f"more than {self.max_headers} request header lines")
            elif _head_size(scope) > self.max_header_bytes:
                await send_json(tagging_send, 431, f"request head larger than {self.max_header_bytes} bytes")
            else:
                await self.app(scope, counting_receive, tagging_send)
        finally:
            self.metrics.in_flight.dec()
            self._observe(scope, exchange, time.perf_counter() - started)
            request_id_var.reset(token)

    def _observe(self, scope: Scope, exchange: _Exchange, elapsed: float) -> None:
        method, path, route = scope["method"], scope["path"], route_label(scope)
        self.metrics.requests.labels(method, route, str(exchange.status)).inc()
        self.metrics.latency.labels(method, route).observe(elapsed)
        self.metrics.request_size.labels(method, route).observe(exchange.received)
        self.metrics.response_size.labels(method, route).observe(exchange.sent)
        self.metrics.bytes_in.inc(exchange.received)
        self.metrics.bytes_out.inc(exchange.sent)
        client = scope.get("client")
        address = client[0] if client else None
        agent = dict(scope["headers"]).get(b"user-agent", b"").decode("latin-1")[:MAX_USER_AGENT]
        fields = {
            "method": method,
            "path": path,
            "route": route,
            "status": exchange.status,
            "duration_ms": round(elapsed * 1000, 2),
            "key_id": getattr(principal_of(scope), "key_id", None),
            "client": address,
            "user_agent": agent or None,
            "bytes_in": exchange.received,
            "bytes_out": exchange.sent,
        }
        # The text format escapes the whole message (flrepo.logs.escape_controls); the user agent is
        # quoted so that its spaces cannot pass for fields of their own.
        quoted_agent = agent.replace("\\", "\\\\").replace('"', '\\"')
        log.info(
            '%s %s %s %s in=%d out=%d ua="%s"',
            method,
            path,
            exchange.status,
            address or "-",
            exchange.received,
            exchange.sent,
            quoted_agent,
            extra={"fields": fields},
        )
