"""Operations every collection shares: create, read, list, update, attach a file, download, delete.

Routers describe the HTTP surface (paths, bodies, aerOS names); this module holds the logic once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException, Request, Response
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app import blobs
from app.db import NATURAL_KEYS, Database
from app.downloads import file_response
from app.uploads import incoming_file

NO_ID = {"_id": 0}


@dataclass(frozen=True)
class Kind:
    """One collection: where it lives, what names it, which aerOS field points at its file."""

    collection: str
    label: str
    file_field: str

    @property
    def keys(self) -> tuple[str, ...]:
        return NATURAL_KEYS[self.collection]

    def describe(self, key: dict[str, Any]) -> str:
        return f"{self.label} " + ", ".join(f"{k}={key[k]!r}" for k in self.keys)

    def not_found(self, key: dict[str, Any]) -> HTTPException:
        return HTTPException(404, f"{self.describe(key)} not found")

    def default_filename(self, key: dict[str, Any]) -> str:
        return "_".join(str(key[k]) for k in self.keys) + ".bin"


MODELS = Kind("models", "model", "model_id")
RESULTS = Kind("results", "training result", "weights_id")
STRATEGIES = Kind("strategies", "strategy", "strategy_id")
TRANSFORMATIONS = Kind("transformations", "transformation", "storage_id")


def now() -> datetime:
    return datetime.now(UTC)


async def create(db: Database, kind: Kind, doc: dict[str, Any]) -> dict[str, Any]:
    stamp = now()
    stored = {**doc, kind.file_field: None, "created_at": stamp, "updated_at": stamp}
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
    response.headers["X-Total-Count"] = str(await coll.count_documents(query))
    # _id order is insertion order: stable pages without a separate sort index.
    cursor = coll.find(query, NO_ID).sort(sort or [("_id", 1)]).skip(offset).limit(limit)
    return await cursor.to_list()


async def update(db: Database, kind: Kind, key: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    doc = await db.collection(kind.collection).find_one_and_update(
        key,
        {"$set": {**fields, "updated_at": now()}},
        projection=NO_ID,
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        raise kind.not_found(key)
    return doc


async def upload(request: Request, db: Database, kind: Kind, key: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Store the request's file, then point the document at it, then delete the file it replaced.

    The new file is complete before the document switches, so a reader always gets a whole file;
    the swap is one atomic find-and-modify, so each replaced file is deleted exactly once.
    """
    coll = db.collection(kind.collection)
    # Refuse early, before a multi-GB body is read, when the item does not exist.
    if await coll.count_documents(key, limit=1) == 0:
        raise kind.not_found(key)
    incoming = await incoming_file(request, max_bytes)
    stored = await blobs.store(
        db.bucket,
        incoming,
        default_filename=kind.default_filename(key),
        max_bytes=max_bytes,
        owner={"collection": kind.collection, **key},
    )
    try:
        before = await coll.find_one_and_update(key, {"$set": {**stored.fields(kind.file_field), "updated_at": now()}})
    except BaseException:
        await blobs.delete_file(db.bucket, stored.file_id)
        raise
    if before is None:  # deleted while we were uploading
        await blobs.delete_file(db.bucket, stored.file_id)
        raise kind.not_found(key)
    await blobs.delete_file(db.bucket, before.get(kind.file_field))
    return before


async def download(
    request: Request,
    db: Database,
    kind: Kind,
    key: dict[str, Any],
    media_type: str | None = None,
) -> Response:
    # A replacement may delete the file between reading the document and opening the file;
    # reading the document once more then finds the new one.
    for _ in range(3):
        doc = await get(db, kind, key)
        file_id = doc.get(kind.file_field)
        if file_id is None:
            raise HTTPException(404, f"{kind.describe(key)} has no file yet")
        grid_out = await blobs.open_file(db.bucket, file_id)
        if grid_out is not None:
            return file_response(
                request, grid_out, doc, default_filename=kind.default_filename(key), media_type=media_type
            )
    raise HTTPException(404, f"the file of {kind.describe(key)} is missing")


async def delete(db: Database, kind: Kind, key: dict[str, Any]) -> None:
    doc = await db.collection(kind.collection).find_one_and_delete(key)
    if doc is None:
        raise kind.not_found(key)
    await blobs.delete_file(db.bucket, doc.get(kind.file_field))
