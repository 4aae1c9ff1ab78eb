"""Operations every collection shares: create, read, list, update, attach a file, download, delete.

Routers describe the HTTP surface (paths, bodies, aerOS names); this module holds the logic once.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException, Request, Response
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from flrepo.server.http.downloads import file_response
from flrepo.server.http.uploads import incoming_file
from flrepo.server.repository.kinds import Kind
from flrepo.server.storage import blobs
from flrepo.server.storage.db import Database

NO_ID = {"_id": 0}


# Per-item locks around "switch the document, delete the old file". MongoDB's findAndModify is
# atomic on its own, but FerretDB (the embedded store) reads and writes it in separate steps, so
# concurrent replacements in one process could both see the same old file and leak a new one.
_item_locks: weakref.WeakValueDictionary[tuple[str, ...], asyncio.Lock] = weakref.WeakValueDictionary()


def _item_lock(kind: Kind, key: dict[str, Any]) -> asyncio.Lock:
    ident = (kind.collection, *(str(key[k]) for k in kind.keys))
    lock = _item_locks.get(ident)
    if lock is None:
        lock = asyncio.Lock()
        _item_locks[ident] = lock
    return lock


def now() -> datetime:
    return datetime.now(UTC)


async def create(db: Database, kind: Kind, doc: dict[str, Any]) -> dict[str, Any]:
    stamp = now()
    stored = {**doc, "created_at": stamp, "updated_at": stamp}
    if kind.file_field:
        stored[kind.file_field] = None
    try:
        # The unique index decides races between concurrent creates: exactly one insert wins.
        await db.collection(kind.collection).insert_one(stored)
    except DuplicateKeyError:
        key = {k: doc[k] for k in kind.keys}
        raise HTTPException(409, f"{kind.describe(key)} already exists") from None
    stored.pop("_id", None)
    return stored


async def get(db: Database, kind: Kind, key: dict[str, Any]) -> dict[str, Any]:
    doc = await db.collection(kind.collection).find_one(key, NO_ID)
    if doc is None:
        raise kind.not_found(key)
    return doc


async def page(
    db: Database,
    kind: Kind,
    response: Response,
    *,
    query: dict[str, Any],
    limit: int,
    offset: int,
    sort: list[tuple[str, int]] | None = None,
) -> list[dict[str, Any]]:
    coll = db.collection(kind.collection)
    # _id order is insertion order: stable pages without a separate sort index.
    cursor = coll.find(query, NO_ID).sort(sort or [("_id", 1)]).skip(offset).limit(limit)
    # The count and the page are independent: one round trip's wait instead of two.
    total, docs = await asyncio.gather(coll.count_documents(query), cursor.to_list())
    response.headers["X-Total-Count"] = str(total)
    return docs


async def update(db: Database, kind: Kind, key: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    doc = await db.collection(kind.collection).find_one_and_update(
        key,
        {"$set": {**fields, "updated_at": now()}},
        # No projection: FerretDB does not implement it for findAndModify.
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        raise kind.not_found(key)
    doc.pop("_id", None)
    return doc


async def upload(request: Request, db: Database, kind: Kind, key: dict[str, Any], max_bytes: int) -> None:
    """Store the request's file, then point the document at it, then delete the file it replaced.

    The new file is complete before the document switches, so a reader always gets a whole file.
    """
    coll = db.collection(kind.collection)
    # Refuse early, before a multi-GB body is read, when the item does not exist.
    if await coll.count_documents(key, limit=1) == 0:
        raise kind.not_found(key)
    incoming = await incoming_file(request, max_bytes)
    stored = await blobs.store(
        db,
        incoming,
        default_filename=kind.default_filename(key),
        max_bytes=max_bytes,
        owner={"collection": kind.collection, **key},
    )
    try:
        async with _item_lock(kind, key):
            replaced = await _switch_file(coll, kind, key, stored)
    except BaseException:
        await blobs.delete_file(db.bucket, stored.file_id)
        raise
    await blobs.discard_file(db.bucket, replaced)


async def _switch_file(coll: Any, kind: Kind, key: dict[str, Any], stored: blobs.StoredFile) -> Any:
    """Point the document at `stored` by compare-and-swap on the current file id; return the old id.

    The swap only succeeds against the id we read, so each replaced file has exactly one owner
    that deletes it, even with writers in other processes. (findAndModify's pre-image would do on
    MongoDB, but FerretDB can return a stale one under concurrent load.)
    """
    for _ in range(20):
        current = await coll.find_one(key, {kind.id_field: 1})
        if current is None:
            raise kind.not_found(key)  # deleted while we were uploading
        old = current.get(kind.id_field)
        result = await coll.update_one(
            {**key, kind.id_field: old}, {"$set": {**stored.fields(kind.id_field), "updated_at": now()}}
        )
        if result.matched_count:
            return old
    raise HTTPException(503, f"{kind.describe(key)} is being replaced too often; try again")


async def download(
    request: Request,
    db: Database,
    kind: Kind,
    key: dict[str, Any],
) -> Response:
    # A replacement may delete the file between reading the document and opening the file;
    # reading the document once more then finds the new one.
    for _ in range(3):
        doc = await get(db, kind, key)
        file_id = doc.get(kind.id_field)
        if file_id is None:
            raise HTTPException(404, f"{kind.describe(key)} has no file yet")
        file_doc = await blobs.open_file(db, file_id)
        if file_doc is not None:
            return file_response(request, db, file_doc, doc, default_filename=kind.default_filename(key))
    raise HTTPException(404, f"the file of {kind.describe(key)} is missing")


async def delete(db: Database, kind: Kind, key: dict[str, Any]) -> None:
    async with _item_lock(kind, key):
        doc = await db.collection(kind.collection).find_one_and_delete(key)
    if doc is None:
        raise kind.not_found(key)
    if kind.file_field:
        await blobs.discard_file(db.bucket, doc.get(kind.file_field))
