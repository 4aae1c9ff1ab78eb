"""Files in GridFS: streaming writes with size/sha256/crc32, swap-then-delete replacement, streamed reads."""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo.errors import PyMongoError

from flrepo.server.storage import gridfs as gridio
from flrepo.server.storage.db import Database
from flrepo.server.storage.errors import TooLarge
from flrepo.server.storage.gridfs import GridWriter, find_file

log = logging.getLogger(__name__)


@dataclass
class IncomingFile:
    """A file arriving as a stream of chunks (from an HTTP body, an archive, ...)."""

    filename: str | None
    content_type: str
    chunks: AsyncIterator[bytes]
    # Already complete in GridFS (a finished resumable upload): `store` only hands it on.
    stored: StoredFile | None = None


@dataclass(frozen=True)
class StoredFile:
    """A file completely written to GridFS, and what we learned while writing it."""

    file_id: ObjectId
    size: int
    sha256: str
    crc32: int
    filename: str
    content_type: str
    uploaded_at: datetime

    def fields(self, id_field: str) -> dict[str, Any]:
        """The document fields that point at this file."""
        return {
            id_field: str(self.file_id),
            "size": self.size,
            "sha256": self.sha256,
            "crc32": self.crc32,
            "filename": self.filename,
            "content_type": self.content_type,
            "uploaded_at": self.uploaded_at,
        }


async def store(
    db: Database,
    incoming: IncomingFile,
    *,
    default_filename: str,
    max_bytes: int,
    owner: dict[str, Any],
    grid_name: str | None = None,
    grid_fields: dict[str, Any] | None = None,
) -> StoredFile:
    """Stream `incoming` into a new GridFS file; nothing is left behind if it fails or is too large.

    The files document is written last, so until then a crashed upload leaves just orphan
    chunks that no document points to (the sweep removes them). The GridFS file is named `grid_name`
    (aerOS's path-like name) with `grid_fields` beside it; the uploaded file's own name is the
    returned `filename`, which the item keeps.
    """
    if incoming.stored is not None:
        return incoming.stored
    filename = incoming.filename or default_filename
    # Through the file client and its guard (Database.read_guard): a slow store is waited for, not given up.
    writer = GridWriter(
        db.read_grid,
        grid_name or filename,
        db.chunk_bytes,
        metadata={"content_type": incoming.content_type, "owner": owner},
        guard=db.read_guard,
    )
    digest = hashlib.sha256()
    crc = 0
    try:
        async for chunk in incoming.chunks:
            if writer.length + len(chunk) > max_bytes:
                raise TooLarge(f"the file is larger than the {max_bytes}-byte limit")
            digest.update(chunk)
            crc = zlib.crc32(chunk, crc)
            await writer.write(chunk)
        sha = digest.hexdigest()
        await writer.close(sha256=sha, **(grid_fields or {}))
    except BaseException:
        await _abort(writer)
        raise
    return StoredFile(
        file_id=writer.file_id,
        size=writer.length,
        sha256=sha,
        crc32=crc,
        filename=filename,
        content_type=incoming.content_type,
        uploaded_at=datetime.now(UTC),
    )


async def _abort(writer: GridWriter) -> None:
    try:
        await writer.abort()
    except Exception:  # the database may be the reason we are aborting
        log.warning("could not remove the chunks of an aborted upload %s; the sweep will", writer.file_id)


def parse_file_id(value: Any) -> Any:
    """Stored ids are strings (aerOS); GridFS wants the ObjectId back when it is one."""
    if isinstance(value, str):
        try:
            return ObjectId(value)
        except InvalidId:
            return value
    return value


async def delete_file(bucket: AsyncGridFSBucket, file_id: Any) -> None:
    if file_id is None:
        return
    try:
        await bucket.delete(parse_file_id(file_id))
    except NoFile:
        pass


async def discard_file(bucket: AsyncGridFSBucket, file_id: Any) -> None:
    """Delete a file nothing points to any more; on a database error leave it to the sweep.

    Used after the document has already changed: the request has succeeded, and failing it now
    would tell the client its change was lost when it was not.
    """
    try:
        await delete_file(bucket, file_id)
    except PyMongoError as exc:
        log.warning("could not delete replaced file %s (the sweep will): %s", file_id, exc)


async def open_file(db: Database, file_id: Any) -> dict[str, Any] | None:
    """The GridFS files document of `file_id`, or None when there is none."""
    if file_id is None:
        return None
    return await find_file(db.grid, parse_file_id(file_id))


def read_range(db: Database, file_doc: dict[str, Any], start: int, length: int) -> AsyncIterator[bytes]:
    """`length` bytes of the file from `start`, a chunk at a time, the way this store serves them fast
    (measured at first contact), waiting for a slow store and retrying a failed read (Database.read_guard)."""
    return gridio.read_range(
        db.read_grid,
        file_doc,
        start,
        length,
        reads=db.dialect.chunk_reads,
        key_batch=db.dialect.key_batch,
        guard=db.read_guard,
    )
