"""What the store can refuse, in its own terms; `flrepo.server.errors` is the one place that maps
these to HTTP statuses (403, 404, 409, 412, 413, 422, 429, 503, 507)."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: the message is meant for the client and names the item."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(StoreError):
    """No such item, or the item has no file yet."""


class AlreadyExists(StoreError):
    """An item with the same natural key exists."""


class Conflict(StoreError):
    """The request contradicts the item's state (a task's phase, a result's configuration id)."""


class PreconditionFailed(StoreError):
    """A conditional change (HTTP If-Match / If-None-Match) found the item in another state."""


class TooLarge(StoreError):
    """A file over the configured size limit; nothing of it was kept."""


class Invalid(StoreError):
    """A value the store cannot hold (e.g. a shape the database refuses, a reference to nothing)."""


class Busy(StoreError):
    """The item changed too often while this request tried to change it; try again."""


class Locked(StoreError):
    """Another request is writing to the same resumable upload right now."""


class ChecksumMismatch(StoreError):
    """A part of a resumable upload does not have the checksum its request announced; it was discarded."""


class Forbidden(StoreError):
    """The caller may not change this item: a task's run-time writes need its task token (or an admin)."""


class QuotaExceeded(StoreError):
    """The API key holds as many open uploads as it may (429)."""


class InsufficientStorage(StoreError):
    """The API key's open uploads would reserve more bytes than it may (507)."""
