"""When to send a request again: connection errors, 503 and 429 answers, with exponential backoff,
or after the time a `Retry-After` header asks for (up to `Retry.max_wait_s`).

Only idempotent calls (reads, whole-value replacements, uploads from a re-readable source) are
repeated after a timeout or a dropped connection; a refused connection never reached the server,
so any call may be sent again after one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from flrepo.client.errors import Unavailable, error_for, retry_after

# Answers that say "not now": the database is down (503), or a proxy limits the rate (429).
RETRIED_STATUSES = (429, 503)


@dataclass(frozen=True)
class Retry:
    """How many attempts in all, and the backoff between them (exponential, capped, jittered).

    A 503 or 429 with `Retry-After` waits what it says instead, unless that is longer than
    `max_wait_s`: then the error is raised at once (its `retry_after` holds the wait) rather than
    blocking the caller for minutes."""

    attempts: int = 4
    base_s: float = 0.25
    cap_s: float = 8.0
    max_wait_s: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.cap_s, self.base_s * 2**attempt) * (0.5 + random.random() / 2)


class Attempts:
    """One call's attempts. Each `after_*` returns the delay before the next try, or raises."""

    def __init__(self, retry: Retry, idempotent: bool, where: str) -> None:
        self.retry = retry
        self.idempotent = idempotent
        self.where = where
        self.done = 0

    def _next(self, repeatable: bool) -> float | None:
        self.done += 1
        if not repeatable or self.done >= max(1, self.retry.attempts):
            return None
        return self.retry.delay(self.done - 1)

    def after_error(self, exc: httpx.TransportError) -> float:
        delay = self._next(self.idempotent or isinstance(exc, httpx.ConnectError))
        if delay is None:
            raise Unavailable(f"cannot reach the repository at {self.where}: {type(exc).__name__}: {exc}") from exc
        return delay

    def after_response(self, response: httpx.Response) -> float | None:
        """None when the response is a success; raises the typed error when it is final."""
        if response.status_code < 400:
            return None
        delay = self._next(self.idempotent) if response.status_code in RETRIED_STATUSES else None
        asked = retry_after(response)
        if asked is not None and delay is not None:
            delay = asked if asked <= self.retry.max_wait_s else None
        if delay is None:
            raise error_for(response)
        return delay
