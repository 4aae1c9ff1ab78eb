"""Typed exceptions for the SDK: one class per kind of failure, each carrying the server's `detail`
and, when the server answered, its request id (`X-Request-ID`: the id of its log lines for the request)."""

from __future__ import annotations

import datetime
import email.utils
from typing import Any

import httpx


class RepositoryError(Exception):
    """Base class: the repository answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: Any = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.request_id = request_id  # None when no answer came (no connection, a timeout)
        self.retry_after = retry_after  # seconds the server asked to wait (Retry-After), if it did


class Unauthorized(RepositoryError):
    """401: no API key, or one the server does not know."""


class Forbidden(RepositoryError):
    """403: the API key's role does not allow this call."""


class NotFound(RepositoryError):
    """404: no such item (or it has no file yet)."""


class Conflict(RepositoryError):
    """409: the item exists already, or the task is in a phase that forbids the change."""


class TooLarge(RepositoryError):
    """413: the file or body is over the server's limit; nothing was stored."""


class Invalid(RepositoryError):
    """400/422: the server refused the input; `detail` says which field and why."""


class Unavailable(RepositoryError):
    """503 or no connection: the service or its database is unreachable; worth retrying later."""


class RateLimited(Unavailable):
    """429: too many requests (a proxy or gateway in front of the service); `retry_after` says when to try again."""


class IntegrityError(RepositoryError):
    """The downloaded bytes do not match the sha256 the server reported (the partial file is removed)."""


_BY_STATUS: dict[int, type[RepositoryError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: Invalid,
    429: RateLimited,
    503: Unavailable,
}


def error_for(response: httpx.Response) -> RepositoryError:
    """The exception for an error response, read from its JSON `{"detail": ...}` body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:500] or response.reason_phrase
    request = response.request
    request_id = response.headers.get("x-request-id")
    message = f"{request.method} {request.url.path}: {response.status_code} {describe(detail)}{id_suffix(request_id)}"
    cls = _BY_STATUS.get(response.status_code, RepositoryError)
    return cls(
        message,
        status=response.status_code,
        detail=detail,
        request_id=request_id,
        retry_after=retry_after(response),
    )


def id_suffix(request_id: str | None) -> str:
    """How a message names the request, so a user can hand the id to whoever reads the server's logs."""
    return f" (request id {request_id})" if request_id else ""


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def describe(detail: Any) -> str:
    """A one-line reading of a `detail`: FastAPI's validation lists become `field: message; ...`."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{where}: {item.get('msg', item)}" if where else str(item.get("msg", item)))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)
