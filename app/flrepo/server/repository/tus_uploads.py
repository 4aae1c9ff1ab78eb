"""Resumable uploads (tus 1.0) in the store, without HTTP.

An upload is a document in `uploads` (offset, length, target, metadata, owner, expiry) and a GridFS
file being written: every part goes straight into that file's chunks, continuing the partial last
chunk where a part ended mid-chunk. The files document is written when the last byte is there; the
route then attaches the file to its target exactly as a PUT does.

One request at a time writes to an upload: a part holds a lease on the document (a token with a time,
refreshed while bytes arrive), so concurrent parts on several API processes cannot interleave. A lease
whose holder died (process killed) goes stale and is taken over.

The sha256 of the whole file is carried across parts in memory (hashlib cannot export its state); when
the parts of one upload reached different processes, or the process restarted, it is computed at
completion by streaming the stored chunks once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from flrepo.server.repository.kinds import UPLOAD_GRID_NAME
from flrepo.server.storage import blobs
from flrepo.server.storage import gridfs as gridio
from flrepo.server.storage.blobs import StoredFile
from flrepo.server.storage.db import UPLOAD_FILE_FIELD, UPLOADS, Database
from flrepo.server.storage.errors import (
    ChecksumMismatch,
    Conflict,
    InsufficientStorage,
    Locked,
    NotFound,
    QuotaExceeded,
    TooLarge,
)
from flrepo.server.storage.gridfs import GridAppender

# Algorithms of the tus checksum extension we accept (tuspy sends sha1, the SDK sha256).
CHECKSUMS: dict[str, Callable[[], Any]] = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}
# A lease not refreshed for this long belongs to a request whose process died.
LEASE_STALE_S = 120.0
LEASE_REFRESH_S = 10.0
# How long a request waits for another one on the same upload to finish (e.g. a part whose client
# dropped the connection, still storing what it received) before answering 423.
LOCK_WAIT_S = 5.0
LOCK_POLL_S = 0.05
# Whole-file hash states kept in memory, at most (each is a few hundred bytes).
HASH_CACHE_SIZE = 1024


@dataclass
class Part:
    """One PATCH: where it starts, its bytes, the Content-Length it announced and its checksum."""

    offset: int
    chunks: AsyncIterator[bytes]
    declared: int | None
    checksum: tuple[str, bytes] | None = None


class _Hashes:
    """sha256 and crc32 of each upload's first `offset` bytes, for uploads this process has written."""

    def __init__(self) -> None:
        self._states: OrderedDict[str, tuple[int, Any, int]] = OrderedDict()

    def get(self, upload_id: str, offset: int) -> tuple[Any, int] | None:
        state = self._states.get(upload_id)
        if state is None or state[0] != offset:
            return None
        return state[1].copy(), state[2]

    def put(self, upload_id: str, offset: int, sha: Any, crc: int) -> None:
        self._states[upload_id] = (offset, sha, crc)
        self._states.move_to_end(upload_id)
        while len(self._states) > HASH_CACHE_SIZE:
            self._states.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        self._states.pop(upload_id, None)


_hashes = _Hashes()


def _coll(db: Database) -> Any:
    return db.collection(UPLOADS)


def now() -> datetime:
    return datetime.now(UTC)


async def create(
    db: Database,
    *,
    length: int,
    target: str,
    filename: str | None,
    content_type: str,
    metadata: str,
    key_id: str,
    expiry_s: float,
) -> dict[str, Any]:
    """A new, empty upload of `length` bytes for `target`."""
    stamp = now()
    doc = {
        "_id": uuid.uuid4().hex,
        UPLOAD_FILE_FIELD: ObjectId(),
        "chunk_size": db.chunk_bytes,
        "length": length,
        "offset": 0,
        "target": target,
        "filename": filename,
        "content_type": content_type,
        "metadata": metadata,  # the Upload-Metadata header as sent, echoed by HEAD
        "key_id": key_id,
        "created_at": stamp,
        "updated_at": stamp,
        "expires_at": stamp + timedelta(seconds=expiry_s),
        "completed_at": None,
        "lease": None,
        "lease_at": None,
    }
    await _coll(db).insert_one(doc)
    return doc


@dataclass(frozen=True)
class Quota:
    """What one API key's open uploads may hold at once."""

    max_open: int
    max_reserved_bytes: int


def _open_query(key_id: str | None) -> dict[str, Any]:
    query: dict[str, Any] = {"completed_at": None, "expires_at": {"$gt": now()}}
    if key_id is not None:
        query["key_id"] = key_id
    return query


async def check_quota(db: Database, key_id: str, length: int, quota: Quota) -> None:
    """QuotaExceeded (429) when the key has `max_open` open uploads, InsufficientStorage (507) when this one
    would make the bytes they announce more than `max_reserved_bytes`."""
    open_count, reserved = 0, 0
    async for doc in _coll(db).find(_open_query(key_id), {"length": 1}):
        open_count += 1
        reserved += int(doc.get("length") or 0)
    if open_count >= quota.max_open:
        raise QuotaExceeded(
            f"API key {key_id!r} has {open_count} open uploads, the most it may (FLREPO_UPLOAD_MAX_OPEN); finish "
            "or terminate one (DELETE /uploads/ID; GET /uploads lists them), or wait for one to expire"
        )
    if reserved + length > quota.max_reserved_bytes:
        raise InsufficientStorage(
            f"API key {key_id!r}: its open uploads announce {reserved} bytes; {length} more would pass the "
            f"{quota.max_reserved_bytes}-byte limit (FLREPO_UPLOAD_MAX_RESERVED_BYTES); finish or terminate some "
            "(GET /uploads lists them)"
        )


async def page_open(db: Database, key_id: str | None, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Open uploads (of one key, or of every key), oldest first, and how many there are."""
    query = _open_query(key_id)
    total = await _coll(db).count_documents(query)
    fields = {"_id": 1, "key_id": 1, "target": 1, "filename": 1, "length": 1, "offset": 1, "created_at": 1}
    cursor = _coll(db).find(query, {**fields, "updated_at": 1, "expires_at": 1}).sort("created_at", 1)
    found = [doc async for doc in cursor.skip(offset).limit(limit)]
    return found, total


def _expired(doc: dict[str, Any]) -> bool:
    expires = doc.get("expires_at")
    if isinstance(expires, datetime) and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return isinstance(expires, datetime) and expires < now()


async def get(db: Database, upload_id: str) -> dict[str, Any]:
    """The upload; NotFound when there is none or it has expired (the sweep removes it later)."""
    doc = await _coll(db).find_one({"_id": upload_id})
    if doc is None or _expired(doc):
        raise NotFound(f"upload {upload_id!r} not found")
    return doc


def _free(stamp: datetime) -> dict[str, Any]:
    return {"$or": [{"lease": None}, {"lease_at": {"$lt": stamp - timedelta(seconds=LEASE_STALE_S)}}]}


async def settled(db: Database, upload_id: str, wait_s: float = LOCK_WAIT_S) -> dict[str, Any]:
    """The upload once no part is being written to it (or after `wait_s`): its offset is then final."""
    deadline = time.monotonic() + wait_s
    while True:
        doc = await get(db, upload_id)
        if doc.get("lease") is None or time.monotonic() > deadline:
            return doc
        if await _coll(db).count_documents({"_id": upload_id, **_free(now())}, limit=1):
            return doc
        await asyncio.sleep(LOCK_POLL_S)


class Lease:
    """The right to write to one upload; `refresh` keeps it from going stale during a long part."""

    def __init__(self, db: Database, upload_id: str, token: str) -> None:
        self.db = db
        self.upload_id = upload_id
        self.token = token
        self._refreshed = time.monotonic()

    @classmethod
    async def take(cls, db: Database, upload_id: str, wait_s: float = LOCK_WAIT_S) -> Lease:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        while True:
            stamp = now()
            taken = await _coll(db).update_one(
                {"_id": upload_id, **_free(stamp)}, {"$set": {"lease": token, "lease_at": stamp}}
            )
            if taken.matched_count:
                return cls(db, upload_id, token)
            await get(db, upload_id)  # NotFound when it is gone
            if time.monotonic() > deadline:
                raise Locked(f"upload {upload_id!r} is being written by another request; try again")
            await asyncio.sleep(LOCK_POLL_S)

    async def refresh(self) -> None:
        if time.monotonic() - self._refreshed < LEASE_REFRESH_S:
            return
        self._refreshed = time.monotonic()
        await _coll(self.db).update_one({"_id": self.upload_id, "lease": self.token}, {"$set": {"lease_at": now()}})

    async def release(self) -> None:
        await _coll(self.db).update_one({"_id": self.upload_id, "lease": self.token}, {"$set": {"lease": None}})


async def write_part(db: Database, doc: dict[str, Any], lease: Lease, part: Part, expiry_s: float) -> dict[str, Any]:
    """Append the part at the upload's offset; return the upload as it is then.

    Without a checksum whatever arrived is kept, even when the client went away mid-part (tus: store
    as much as possible). With one, the part counts only when complete and matching; otherwise its
    bytes are discarded (ChecksumMismatch for a mismatch) and the offset stays where it was.
    """
    upload_id, length, offset = doc["_id"], int(doc["length"]), int(doc["offset"])
    if doc.get("completed_at") is not None:
        raise Conflict(f"upload {upload_id!r} is complete")
    if part.offset != offset:
        raise Conflict(f"Upload-Offset {part.offset} is not the upload's offset {offset}")
    if part.declared is not None and offset + part.declared > length:
        raise TooLarge(f"the part ends at {offset + part.declared}, beyond the upload's length {length}")
    check = CHECKSUMS[part.checksum[0]]() if part.checksum else None
    whole = _hashes.get(upload_id, offset)
    # The whole file's sums go on from the last part this process wrote (or from the start).
    sha, crc = whole if whole is not None else (hashlib.sha256() if offset == 0 else None, 0)
    # Through the file client and its guard, as a PUT's body (storage.blobs): a store that is slow for a
    # while is waited for and a failed batch retried, not given up at the per-operation timeout.
    appender = GridAppender(db.read_grid, doc[UPLOAD_FILE_FIELD], int(doc["chunk_size"]), offset, db.read_guard)
    await appender.open()
    received = 0
    async for piece in part.chunks:
        if offset + received + len(piece) > length:
            raise TooLarge(f"the part goes beyond the upload's length {length}")
        received += len(piece)
        if check is not None:
            check.update(piece)
        if sha is not None:
            sha.update(piece)
            crc = zlib.crc32(piece, crc)
        await appender.write(piece)
        await lease.refresh()
    await appender.close()
    if part.checksum is not None:
        assert check is not None
        if part.declared is not None and received != part.declared:
            return doc  # interrupted: nothing to verify it against, so nothing of it counts
        if check.digest() != part.checksum[1]:
            raise ChecksumMismatch(
                f"the part's {part.checksum[0]} is {base64.b64encode(check.digest()).decode()}, "
                f"not {base64.b64encode(part.checksum[1]).decode()}; it was discarded"
            )
    new_offset = offset + received
    stamp = now()
    changes = {"offset": new_offset, "updated_at": stamp, "expires_at": stamp + timedelta(seconds=expiry_s)}
    await _coll(db).update_one({"_id": upload_id, "lease": lease.token}, {"$set": changes})
    if sha is not None:
        _hashes.put(upload_id, new_offset, sha, crc)
    return {**doc, **changes}


async def _hash_range(db: Database, doc: dict[str, Any], start: int, end: int) -> tuple[Any, int]:
    sha, crc = hashlib.sha256(), 0
    file_doc = {"_id": doc[UPLOAD_FILE_FIELD], "chunkSize": int(doc["chunk_size"])}
    async for data in blobs.read_range(db, file_doc, start, end - start):
        sha.update(data)
        crc = zlib.crc32(data, crc)
    return sha, crc


async def finish(db: Database, doc: dict[str, Any]) -> StoredFile:
    """Make the complete chunks a GridFS file (its files document, with the sha256) and describe it."""
    length = int(doc["length"])
    known = _hashes.get(doc["_id"], length)
    sha, crc = known if known is not None else await _hash_range(db, doc, 0, length)
    digest = sha.hexdigest()
    filename = doc.get("filename") or "upload.bin"
    await gridio.write_files_document(
        db.grid,
        doc[UPLOAD_FILE_FIELD],
        length,
        int(doc["chunk_size"]),
        # Renamed to its target's aerOS name when attached (repository.items.attach).
        UPLOAD_GRID_NAME.format(upload_id=doc["_id"]),
        metadata={"content_type": doc["content_type"], "owner": {"upload": doc["_id"], "target": doc["target"]}},
        sha256=digest,
    )
    return StoredFile(
        file_id=doc[UPLOAD_FILE_FIELD],
        size=length,
        sha256=digest,
        crc32=crc,
        filename=filename,
        content_type=doc["content_type"],
        uploaded_at=now(),
    )


async def completed(db: Database, doc: dict[str, Any]) -> None:
    """The file now belongs to its target: the upload only answers HEAD (offset = length) until it expires."""
    _hashes.drop(doc["_id"])
    await _coll(db).update_one(
        {"_id": doc["_id"]}, {"$set": {"completed_at": now(), UPLOAD_FILE_FIELD: None, "lease": None}}
    )


async def discard(db: Database, doc: dict[str, Any]) -> None:
    """Forget the upload and remove its data (chunks, and the files document if it got one)."""
    _hashes.drop(doc["_id"])
    await _coll(db).delete_one({"_id": doc["_id"]})
    file_id = doc.get(UPLOAD_FILE_FIELD)
    if file_id is not None and doc.get("completed_at") is None:
        await db.grid["fs.files"].delete_one({"_id": file_id})
        await db.grid["fs.chunks"].delete_many({"files_id": file_id})
