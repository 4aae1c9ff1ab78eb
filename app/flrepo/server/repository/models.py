"""What only models have: the trained/untrained filter and the list of models that have a file."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flrepo.names import safe_filename
from flrepo.server.repository import items
from flrepo.server.repository.items import NO_ID, Page
from flrepo.server.repository.kinds import MODELS, OWN_GRID_PREFIXES, RESULTS
from flrepo.server.storage import blobs
from flrepo.server.storage.db import Database

AVAILABLE: dict[str, Any] = {MODELS.id_field: {"$ne": None}}
NEWEST_UPLOAD_FIRST = [("uploaded_at", -1)]
# With `_id` as the tie-breaker: the key the archive continues from, batch after batch.
ARCHIVE_ORDER = [("uploaded_at", -1), ("_id", -1)]


async def page(db: Database, *, trained: bool | None, limit: int, offset: int, naive_utc: bool = False) -> Page:
    """Models, optionally only those with (True) or without (False) training results (`naive_utc`: as
    items.page)."""
    query: dict[str, Any] = {}
    if trained is not None:
        # One aggregation finds every trained (name, version) pair, instead of a query per model.
        cursor = await db.collection(RESULTS.collection).aggregate(
            [{"$group": {"_id": {"model_name": "$model_name", "model_version": "$model_version"}}}]
        )
        pairs = [row["_id"] for row in await cursor.to_list()]
        if trained:
            query = {"$or": pairs} if pairs else {"_id": {"$in": []}}
        elif pairs:
            query = {"$nor": pairs}
    return await items.page(db, MODELS, query=query, limit=limit, offset=offset, naive_utc=naive_utc)


async def available_files_json(db: Database) -> AsyncIterator[bytes]:
    """aerOS 1.1.0's `GET /models/available` body, to stream: `fs.files.find({}, {'_id': 0}).sort('uploadDate', 1)`
    as FastAPI 0.83 encoded it (`jsonable_encoder`, then `json.dumps` with Starlette 0.19's options).

    Files only flrepo has (checkpoints, unattached uploads; kinds.OWN_GRID_PREFIXES) are left out: aerOS
    never had them, and its GUI would list them as models. The first document is read here, so a
    database error is an error answer rather than a cut-off body.
    """
    cursor = db.grid["fs.files"].find({}, NO_ID).sort([("uploadDate", 1), ("_id", 1)])
    try:
        first: dict[str, Any] | None = await cursor.next()
    except StopAsyncIteration:
        first = None
    return _json_array(first, cursor)


async def _json_array(first: dict[str, Any] | None, rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    yield b"["
    separator = b""
    if first is not None:
        async for file_doc in _after(first, rest):
            name = file_doc.get("filename")
            if not (isinstance(name, str) and name.startswith(OWN_GRID_PREFIXES)):
                yield separator + aeros_json(file_doc)
                separator = b","
    yield b"]"


async def _after(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for doc in rest:
        yield doc


async def newest_file_json(db: Database, filename: str) -> bytes:
    """aerOS's `/models/download/shell` body: `[newest files document named filename]` without `_id`, or `[]`."""
    cursor = db.grid["fs.files"].find({"filename": filename}, NO_ID).sort([("uploadDate", -1)]).limit(1)
    return aeros_json(await cursor.to_list())


def aeros_json(value: Any) -> bytes:
    """`value` as aerOS's FastAPI 0.83 answered it: no spaces, non-ASCII kept, datetimes in ISO format
    without a zone (aerOS's pymongo client returned naive UTC times)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_aeros_value).encode()


def _aeros_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value).isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)  # an ObjectId in a hand-written document (aerOS answered 500)


async def page_available(db: Database, *, limit: int, offset: int) -> Page:
    """Models that have a file, newest upload first."""
    return await items.page(db, MODELS, query=AVAILABLE, limit=limit, offset=offset, sort=NEWEST_UPLOAD_FIRST)


@dataclass
class ArchiveEntry:
    """One model file in the all-models archive, named `{name}/{version}/{file}`."""

    name: str
    file_id: Any
    size: int
    crc32: int | None
    mtime: float


# Only what an entry needs: documents' `meta` can be large and is never part of the archive.
_ENTRY_FIELDS = {"model_name": 1, "model_version": 1, "filename": 1, MODELS.id_field: 1, "size": 1, "crc32": 1}
ARCHIVE_BATCH = 500


def archive_entry_name(doc: dict[str, Any]) -> str:
    """`{name}/{version}/{file}` from safe components only, whatever the document holds: a restored,
    legacy or directly written document may name `..`, hold a `/` or a control character, and an
    extracting tool would otherwise write outside its target folder."""
    return "/".join(
        (
            safe_filename(doc.get("model_name"), "model"),
            safe_filename(doc.get("model_version"), "version"),
            safe_filename(doc.get("filename"), "model.bin"),
        )
    )


async def _entry(db: Database, doc: dict[str, Any]) -> ArchiveEntry | None:
    size, uploaded = doc.get("size"), doc.get("uploaded_at")
    if size is None or uploaded is None:
        # Stored by aerOS (or not yet migrated): the GridFS file knows its length and date.
        file_doc = await blobs.open_file(db, doc[MODELS.id_field])
        if file_doc is None:
            return None  # points at nothing: there is no file to archive
        size = file_doc["length"] if size is None else size
        uploaded = uploaded or file_doc.get("uploadDate")
    return ArchiveEntry(
        name=archive_entry_name(doc),
        file_id=doc[MODELS.id_field],
        size=int(size),
        crc32=doc.get("crc32"),
        mtime=uploaded.timestamp() if isinstance(uploaded, datetime) else time.time(),
    )


async def iter_archive_entries(db: Database, batch: int | None = None) -> AsyncIterator[ArchiveEntry]:
    """Every model that has a file, newest upload first, read `batch` documents at a time.

    Each batch is its own query continuing after the last entry seen (upload time, then `_id`), so no
    cursor stays open while files stream (a server closes cursors idle for 10 minutes) and only one
    batch of small documents is in memory however many models there are."""
    batch = batch or ARCHIVE_BATCH
    coll = db.collection(MODELS.collection)
    after: dict[str, Any] | None = None
    while True:
        query: dict[str, Any] = dict(AVAILABLE)
        if after is not None:
            stamp, last_id = after.get("uploaded_at"), after["_id"]
            query["$or"] = [{"uploaded_at": stamp, "_id": {"$lt": last_id}}]
            if stamp is not None:
                # Legacy documents without an upload time sort last, and `$lt` never matches them.
                query["$or"] += [{"uploaded_at": {"$lt": stamp}}, {"uploaded_at": None}]
        docs = await coll.find(query, {**_ENTRY_FIELDS, "uploaded_at": 1}).sort(ARCHIVE_ORDER).limit(batch).to_list()
        for doc in docs:
            entry = await _entry(db, doc)
            if entry is not None:
                yield entry
        if len(docs) < batch:
            return
        after = docs[-1]


async def read_archived(db: Database, entry: ArchiveEntry) -> AsyncIterator[bytes]:
    """The entry's bytes; OSError when its file vanished or changed since the list was made."""
    file_doc = await blobs.open_file(db, entry.file_id)
    if file_doc is None:
        raise OSError(f"{entry.name}: file disappeared while the archive was being written")
    if file_doc["length"] != entry.size:
        raise OSError(f"{entry.name}: file changed while the archive was being written")
    async for chunk in blobs.read_range(db, file_doc, 0, entry.size):
        yield chunk
