"""How the service meets the network: the one uvicorn configuration every way of running it shares
(`flrepo serve`, hence `make run`, the image, compose and Helm; the tests' live server too), with
bounded connections.

- Request heads are parsed by h11 with at most FLREPO_MAX_HEADER_BYTES buffered (httptools, uvicorn's
  default parser, buffers a header of any size: a 100 MiB header used to be read into memory);
  a larger head gets 400 and the connection closes. More than FLREPO_MAX_HEADERS header lines get 431
  (RequestContext).
- A connection must deliver a complete request head within FLREPO_HEADER_TIMEOUT_S of opening (or of its
  previous response): silent and half-sent requests are answered 408 and closed.
- While a request body is being received, FLREPO_IDLE_TIMEOUT_S of silence closes the connection; a slow
  upload that keeps sending is never cut. Silence only counts while the service is waiting for the client
  (not while reading is paused because the service is busy writing what it already has). A client that
  stops reading a response for as long is disconnected too.
- Between requests uvicorn's keep-alive timeout (5 s) applies; no `server` header is sent.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from flrepo.server.settings import Settings

# How often each connection checks its clocks, at most (smaller timeouts check more often).
CHECK_EVERY_S = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    idle_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(settings.header_timeout_s, settings.idle_timeout_s)


class ServingConfig(uvicorn.Config):
    """uvicorn's Config plus the connection limits the protocol below reads."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **options: Any) -> None:
        super().__init__(app, **options)
        self.limits = limits


# After refusing a request head, what still arrives is read and dropped this long, so the client can
# read the answer (closing with unread data would reset the connection and lose it).
LINGER_S = 2.0


def _raw_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines for request heads, silent request bodies and unread responses."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits = getattr(config, "limits", None)
        self.limits = limits if isinstance(limits, ConnectionLimits) else ConnectionLimits(10.0, 30.0)
        self._check_every = min(CHECK_EVERY_S, self.limits.header_timeout_s / 4, self.limits.idle_timeout_s / 4)
        self._head_since = 0.0
        self._last_read = 0.0
        self._write_paused_since: float | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._linger_until: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        now = self.loop.time()
        self._head_since = self._last_read = now
        self._watch = self.loop.call_later(self._check_every, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._linger_until is not None:
            return  # a refused request: dropped unread, nothing is buffered
        self._last_read = self.loop.time()
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        """The parser refused the request: 431 when the head outgrew its limit, else 400. The answer is
        written, then the rest of the request is dropped for a moment before the connection closes."""
        buffered, _ = self.conn.trailing_data
        limit = self.config.h11_max_incomplete_event_size or 0
        if limit and len(buffered) > limit:
            answer = _raw_response(431, "Request Header Fields Too Large", f"request head larger than {limit} bytes")
        else:
            answer = _raw_response(400, "Bad Request", "invalid HTTP request")
        self.logger.info("refused an invalid request head (%s)", answer.split(b"\r\n", 1)[0].decode())
        self.transport.write(answer)
        self._linger_until = self.loop.time() + LINGER_S
        if hasattr(self.transport, "can_write_eof") and self.transport.can_write_eof():
            self.transport.write_eof()

    def on_response_complete(self) -> None:
        # The next request head is due within the head timeout from now (keep-alive also applies).
        self._head_since = self.loop.time()
        super().on_response_complete()

    def pause_writing(self) -> None:
        self._write_paused_since = self.loop.time()
        super().pause_writing()

    def resume_writing(self) -> None:
        self._write_paused_since = None
        super().resume_writing()

    def _awaiting_head(self) -> bool:
        return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def _check(self) -> None:
        self._watch = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        limits = self.limits
        if self._linger_until is not None:
            if now >= self._linger_until:
                self.transport.close()
                return
        elif self._awaiting_head() and now - self._head_since > limits.header_timeout_s:
            if self.conn.our_state is h11.IDLE:
                self.transport.write(_raw_response(408, "Request Timeout", "request not received in time"))
            self.transport.close()
            return
        if (
            self.conn.their_state is h11.SEND_BODY
            and not self.flow.read_paused
            and now - self._last_read > limits.idle_timeout_s
        ):
            # The service is waiting for body bytes that do not come: the request handler sees a
            # disconnect (a partial upload is removed).
            self.transport.close()
            return
        if self._write_paused_since is not None and now - self._write_paused_since > limits.idle_timeout_s:
            self.transport.close()
            return
        self._watch = self.loop.call_later(self._check_every, self._check)


def config(
    app: Any, settings: Settings, *, host: str | None = None, port: int | None = None, **options: Any
) -> ServingConfig:
    """The uvicorn configuration of `app`: every way of running the service goes through here."""
    defaults: dict[str, Any] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "http": BoundedH11Protocol,
        "ws": "none",
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "server_header": False,
        "log_level": settings.log_level.lower(),
        "log_config": None,  # keep our handler; our middleware writes the access log
        "access_log": False,
        "proxy_headers": True,
        "forwarded_allow_ips": os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
    }
    return ServingConfig(app, limits=ConnectionLimits.from_settings(settings), **{**defaults, **options})
