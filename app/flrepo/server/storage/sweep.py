"""Removing GridFS data that no document points to.

An upload that dies (client gone, process killed) leaves chunks without a files document,
because GridFS writes that document only when the file is closed; a crash between closing a file
and switching the document to it leaves a whole unreferenced file. Both are removed here, once
they are older than a grace period, so an upload still in progress is never touched.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.errors import PyMongoError

from flrepo.server.storage.blobs import parse_file_id
from flrepo.server.storage.db import REFERENCE_FIELDS, UPLOAD_FILE_FIELD, UPLOADS, Database

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    orphan_files: int = 0
    orphan_chunk_sets: int = 0
    chunks_removed: int = 0
    expired_uploads: int = 0


async def referenced_ids(db: Database, *, uploads: bool = True) -> set[Any]:
    """Every GridFS id a document points at; with `uploads`, also the files resumable uploads are writing."""
    ids: set[Any] = set()
    fields = {**REFERENCE_FIELDS, UPLOADS: UPLOAD_FILE_FIELD} if uploads else REFERENCE_FIELDS
    for collection, field in fields.items():
        async for doc in db.collection(collection).find({field: {"$ne": None}}, {field: 1, "_id": 0}):
            # aerOS wrote the id's text, a hand-edited database may hold the ObjectId: both count.
            ids.add(parse_file_id(doc[field]))
            ids.add(doc[field])
    return ids


def _older_than(value: Any, cutoff: datetime) -> bool:
    if isinstance(value, ObjectId):
        return value.generation_time < cutoff
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp < cutoff
    return False


async def _chunk_sets(db: Database) -> list[Any]:
    """The files_id of every chunk set in GridFS."""
    chunks = db.grid["fs.chunks"]
    if db.dialect.indexed_distinct:
        return list(await chunks.distinct("files_id"))
    # Where distinct would decode every stored chunk, read only first chunks (through their index):
    # chunk 0 is always the first one written, by us, by PyMongo's GridFS and by restore.
    return [doc["files_id"] async for doc in chunks.find({"n": 0}, {"files_id": 1, "_id": 0})]


async def _last_chunk(db: Database, files_id: Any) -> dict[str, Any] | None:
    """The chunk with the highest n of a chunk set (its `_id` and `at`)."""
    chunks = db.grid["fs.chunks"]
    projection = {"_id": 1, "at": 1}
    if db.dialect.streams_sorted_reads:
        return await chunks.find_one({"files_id": files_id}, projection, sort=[("n", -1)])

    # Where a sort would load every chunk of the set into memory: chunks are numbered 0..k-1, so
    # find k-1 by key look-ups only, doubling then halving (about 2·log2(k) look-ups).
    async def chunk(n: int) -> dict[str, Any] | None:
        return await chunks.find_one({"files_id": files_id, "n": n}, projection)

    found = await chunk(0)
    if found is None:
        return None
    low, high = 0, 1  # chunk `low` exists; find the first missing one at or above `high`
    while (probe := await chunk(high)) is not None:
        low, found, high = high, probe, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        probe = await chunk(middle)
        if probe is None:
            high = middle
        else:
            low, found = middle, probe
    return found


async def expire_uploads(db: Database, stamp: datetime) -> int:
    """Forget resumable uploads whose expiry has passed, and remove what they stored (unless an item
    points at it: a completion that attached the file but could not record it)."""
    uploads = db.collection(UPLOADS)
    expired = [doc async for doc in uploads.find({"expires_at": {"$lt": stamp}}, {"_id": 1, UPLOAD_FILE_FIELD: 1})]
    if not expired:
        return 0
    kept = await referenced_ids(db, uploads=False)
    for doc in expired:
        await uploads.delete_one({"_id": doc["_id"]})
        file_id = doc.get(UPLOAD_FILE_FIELD)
        if file_id is not None and file_id not in kept:
            await db.grid["fs.files"].delete_one({"_id": file_id})
            await db.grid["fs.chunks"].delete_many({"files_id": file_id})
    return len(expired)


async def sweep(db: Database, grace: timedelta) -> SweepReport:
    """Delete expired resumable uploads, then unreferenced files and chunk sets whose last write is
    older than `grace` (the chunks of a live resumable upload are referenced by it)."""
    report = SweepReport()
    stamp = datetime.now(UTC)
    cutoff = stamp - grace
    report.expired_uploads = await expire_uploads(db, stamp)
    files = db.grid["fs.files"]
    chunks = db.grid["fs.chunks"]
    # Read the references after listing the files: a file switched in meanwhile is then seen.
    candidates = [doc async for doc in files.find({}, {"_id": 1, "uploadDate": 1})]
    referenced = await referenced_ids(db)
    for doc in candidates:
        if doc["_id"] not in referenced and _older_than(doc.get("uploadDate"), cutoff):
            await db.bucket.delete(doc["_id"])
            report.orphan_files += 1
    # Chunk sets whose files document was never written: an upload that did not finish.
    # (one newest-chunk look-up each: FerretDB has no $max accumulator in $group.)
    for files_id in await _chunk_sets(db):
        if files_id in referenced or await files.count_documents({"_id": files_id}, limit=1):
            continue
        newest = await _last_chunk(db, files_id)
        # Our chunks carry their write time in "at"; other writers' ObjectId _ids carry it too.
        if newest is not None and _older_than(newest.get("at", newest["_id"]), cutoff):
            result = await chunks.delete_many({"files_id": files_id})
            report.orphan_chunk_sets += 1
            report.chunks_removed += result.deleted_count
    if report.orphan_files or report.orphan_chunk_sets or report.expired_uploads:
        log.info(
            "sweep removed %d orphan files, %d unfinished uploads (%d chunks) and %d expired resumable uploads",
            report.orphan_files,
            report.orphan_chunk_sets,
            report.chunks_removed,
            report.expired_uploads,
        )
    return report


async def sweep_forever(db: Database, interval: float, grace: timedelta) -> None:
    """Sweep now and then every `interval` seconds; database outages only delay it."""
    while True:
        try:
            await db.ensure_indexes()
            await sweep(db, grace)
        except PyMongoError as exc:
            log.warning("sweep skipped: %s", exc)
        await asyncio.sleep(interval)
