"""Typed exceptions for the SDK: one class per kind of failure, each carrying the server's `detail`."""

from __future__ import annotations

from typing import Any

import httpx


class RepositoryError(Exception):
    """Base class: the repository answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


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
    503: Unavailable,
}


def error_for(response: httpx.Response) -> RepositoryError:
    """The exception for an error response, read from its JSON `{"detail": ...}` body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:500] or response.reason_phrase
    request = response.request
    message = f"{request.method} {request.url.path}: {response.status_code} {describe(detail)}"
    cls = _BY_STATUS.get(response.status_code, RepositoryError)
    return cls(message, status=response.status_code, detail=detail)


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
