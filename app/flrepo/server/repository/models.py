"""What only models have: the trained/untrained filter and the list of models that have a file."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flrepo.server.repository import items
from flrepo.server.repository.items import NO_ID, Page
from flrepo.server.repository.kinds import MODELS, RESULTS
from flrepo.server.storage import blobs
from flrepo.server.storage.db import Database

AVAILABLE: dict[str, Any] = {MODELS.id_field: {"$ne": None}}
NEWEST_UPLOAD_FIRST = [("uploaded_at", -1)]


async def page(db: Database, *, trained: bool | None, limit: int, offset: int) -> Page:
    """Models, optionally only those with (True) or without (False) training results."""
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
    return await items.page(db, MODELS, query=query, limit=limit, offset=offset)


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


async def archive_entries(db: Database) -> list[ArchiveEntry]:
    """Every model that has a file, newest upload first."""
    docs = await db.collection(MODELS.collection).find(AVAILABLE, NO_ID).sort(NEWEST_UPLOAD_FIRST).to_list()
    entries = []
    for doc in docs:
        size, uploaded = doc.get("size"), doc.get("uploaded_at")
        if size is None or uploaded is None:
            # Stored by aerOS (or not yet migrated): the GridFS file knows its length and date.
            file_doc = await blobs.open_file(db, doc[MODELS.id_field])
            if file_doc is None:
                continue  # points at nothing: there is no file to archive
            size = file_doc["length"] if size is None else size
            uploaded = uploaded or file_doc.get("uploadDate")
        entries.append(
            ArchiveEntry(
                name=f"{doc.get('model_name')}/{doc.get('model_version')}/{doc.get('filename') or 'model.bin'}",
                file_id=doc[MODELS.id_field],
                size=int(size),
                crc32=doc.get("crc32"),
                mtime=uploaded.timestamp() if isinstance(uploaded, datetime) else time.time(),
            )
        )
    return entries


async def read_archived(db: Database, entry: ArchiveEntry) -> AsyncIterator[bytes]:
    """The entry's bytes; OSError when its file vanished or changed since the list was made."""
    file_doc = await blobs.open_file(db, entry.file_id)
    if file_doc is None:
        raise OSError(f"{entry.name}: file disappeared while the archive was being written")
    if file_doc["length"] != entry.size:
        raise OSError(f"{entry.name}: file changed while the archive was being written")
    async for chunk in blobs.read_range(db, file_doc, 0, entry.size):
        yield chunk
