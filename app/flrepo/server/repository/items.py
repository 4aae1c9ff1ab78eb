"""Operations every collection shares: create, read, list, update, attach a file, open it, delete.

Routers describe the HTTP surface (paths, bodies, aerOS names); this module holds the logic once
and knows no HTTP: it raises the store's errors (flrepo.server.storage.errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from flrepo.server.repository.kinds import Kind
from flrepo.server.storage import blobs
from flrepo.server.storage.blobs import IncomingFile, StoredFile
from flrepo.server.storage.db import Database
from flrepo.server.storage.errors import AlreadyExists, Busy, Conflict, NotFound, PreconditionFailed

NO_ID = {"_id": 0}
# A compare-and-swap that keeps losing to other writers gives up after this many tries.
SWAP_ATTEMPTS = 20


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Page:
    """One page of a list and the number of items matching the query."""

    items: list[dict[str, Any]]
    total: int


@dataclass(frozen=True)
class FileCondition:
    """Which current file an upload may replace, judged by its stored sha256 (HTTP If-Match and
    If-None-Match on a PUT). The default replaces whatever is there."""

    # True: only if the item has a file; False: only if it has none.
    exists: bool | None = None
    # Only a file with one of these digests (an empty set matches nothing).
    sha256: frozenset[str] | None = None
    # Only a file with none of these digests (or no file).
    not_sha256: frozenset[str] = frozenset()

    @property
    def unconditional(self) -> bool:
        return self.exists is None and self.sha256 is None and not self.not_sha256

    def query(self, id_field: str) -> dict[str, Any]:
        """The condition as a filter on the item's document, for the compare-and-swap."""
        if self.unconditional:
            return {}
        clauses: list[dict[str, Any]] = []
        if self.exists is True or self.sha256 is not None:
            clauses.append({id_field: {"$ne": None}})
        if self.exists is False:
            clauses.append({id_field: None})
        if self.sha256 is not None:
            clauses.append({"sha256": {"$in": sorted(self.sha256)}})
        if self.not_sha256:
            clauses.append({"$or": [{id_field: None}, {"sha256": {"$nin": sorted(self.not_sha256)}}]})
        return {"$and": clauses}

    def holds(self, doc: dict[str, Any], id_field: str) -> bool:
        """The same condition, judged on a document already read (to refuse before any upload)."""
        has_file = doc.get(id_field) is not None
        sha = doc.get("sha256") if has_file else None
        if (self.exists is True and not has_file) or (self.exists is False and has_file):
            return False
        if self.sha256 is not None and sha not in self.sha256:
            return False
        return not (has_file and sha in self.not_sha256)


@dataclass
class FileView:
    """An item's stored file, ready to stream: the item, its GridFS files document, and a reader."""

    item: dict[str, Any]
    file: dict[str, Any]
    filename: str
    _db: Database

    @property
    def size(self) -> int:
        return int(self.file["length"])

    @property
    def sha256(self) -> str | None:
        return self.item.get("sha256") or self.file.get("sha256")

    def read(self, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """`length` bytes from `start` (default: to the end), a chunk at a time."""
        return blobs.read_range(self._db, self.file, start, self.size - start if length is None else length)


async def create(db: Database, kind: Kind, doc: dict[str, Any]) -> dict[str, Any]:
    db.dialect.check_document(doc)
    stamp = now()
    stored = {**doc, "created_at": stamp, "updated_at": stamp}
    if kind.file_field:
        stored[kind.file_field] = None
    if kind.collection in db.unindexed and await exists(db, kind, kind.key_of(doc)):
        # No unique index to decide (see Database.unindexed): at least never add to a known duplicate.
        raise AlreadyExists(f"{kind.describe(doc)} already exists")
    try:
        # The unique index decides races between concurrent creates: exactly one insert wins.
        await db.collection(kind.collection).insert_one(stored)
    except DuplicateKeyError:
        raise AlreadyExists(f"{kind.describe(doc)} already exists") from None
    stored.pop("_id", None)
    return stored


async def get(db: Database, kind: Kind, key: dict[str, Any]) -> dict[str, Any]:
    doc = await db.collection(kind.collection).find_one(key, NO_ID)
    if doc is None:
        raise kind.not_found(key)
    return doc


async def exists(db: Database, kind: Kind, key: dict[str, Any]) -> bool:
    return bool(await db.collection(kind.collection).count_documents(key, limit=1))


async def page(
    db: Database,
    kind: Kind,
    *,
    query: dict[str, Any],
    limit: int,
    offset: int,
    sort: list[tuple[str, int]] | None = None,
    projection: dict[str, Any] | None = None,
    naive_utc: bool = False,
) -> Page:
    """`naive_utc`: datetimes come back naive (they are UTC), for a caller that writes them out itself. The
    driver makes each tz-aware one with a `replace(tzinfo=...)` call, which costs more than decoding it."""
    # Through the client without the per-reply bound, waited for while the store answers pings: a long
    # list on a slow store (a busy machine, FerretDB as released counting every document) is slow, not a 503.
    coll = db.read_meta[kind.collection]
    if naive_utc:
        coll = coll.with_options(codec_options=coll.codec_options.with_options(tz_aware=False))
    cursor = coll.find(query, {**NO_ID, **(projection or {})})
    if sort or db.dialect.streams_sorted_reads:
        # _id order is insertion order: stable pages from the _id index.
        cursor = cursor.sort(sort or [("_id", 1)])
    # Else a store that would sort every document in memory (FerretDB) returns its own storage order,
    # which is insertion order and stable, and reads only the page (it pushes the limit down).
    # One item more than the page: when it does not come, the page is the last one and its end is the
    # total, so no count is sent (a list of up to a page of items costs the store one query, as aerOS's).
    # The whole answer in one reply (batch size): no getMore round trips.
    cursor = cursor.skip(offset).limit(limit + 1).batch_size(limit + 1)
    what = f"listing {kind.collection}"
    docs = await db.waited(cursor.to_list(), what)
    if len(docs) <= limit and (docs or offset == 0):
        return Page(items=docs, total=offset + len(docs))
    # A whole collection's count comes from its metadata (MongoDB; FerretDB with tools/ferretdb's patch),
    # not a scan.
    total = await db.waited(coll.estimated_document_count() if not query else coll.count_documents(query), what)
    return Page(items=docs[:limit], total=total)


async def update(db: Database, kind: Kind, key: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    db.dialect.check_document(fields)
    # Under the item's lock, as a file switch is: where the store rewrites the whole document on an
    # update (FerretDB), one read before a switch and written after it put the replaced (and deleted)
    # file's id back, and the item lost its file.
    async with item_lock(db, kind, key):
        doc = await db.collection(kind.collection).find_one_and_update(
            key,
            {"$set": {**fields, "updated_at": now()}},
            # No projection: FerretDB does not implement it for findAndModify, and the _id is dropped below.
            return_document=ReturnDocument.AFTER,
        )
    if doc is None:
        raise kind.not_found(key)
    doc.pop("_id", None)
    return doc


async def attach(
    db: Database,
    kind: Kind,
    key: dict[str, Any],
    receive: Callable[[], Awaitable[IncomingFile]],
    max_bytes: int,
    *,
    expect: dict[str, Any] | None = None,
    condition: FileCondition | None = None,
    current: dict[str, Any] | None = None,
) -> StoredFile:
    """Store the file `receive()` yields, point the item at it, then delete the file it replaced.

    The item must exist (and match `expect`, field by field) before a byte of the file is read,
    so a multi-GB upload to nothing is refused at once. The new file is complete before the item
    switches to it, so a reader always gets a whole file. An `expect` field that is null in the item
    (as aerOS stored it) matches anything and is set to the expected value with the file.
    A `condition` on the current file is checked first (PreconditionFailed) and again, atomically,
    by the switch: a file replaced by someone else during the upload is never overwritten.
    `current`: the item as the caller has just read it (checked, not read again).
    """
    expect = expect or {}
    condition = condition or FileCondition()
    if current is None:
        current = await attachable(db, kind, key, expect=expect, condition=condition)
    else:
        check_attachable(kind, key, current, expect=expect, condition=condition)
    incoming = await receive()
    named = {**current, **key, **expect}
    stored = await blobs.store(
        db,
        incoming,
        default_filename=kind.default_filename(key),
        max_bytes=max_bytes,
        owner={"collection": kind.collection, **key},
        grid_name=kind.grid_name(named),
        grid_fields=kind.grid_fields(named),
    )
    if incoming.stored is not None:
        # A finished resumable upload was written under its upload's name: it takes its item's now.
        await rename_file(db, stored.file_id, kind.grid_name(named), kind.grid_fields(named))
    try:
        async with item_lock(db, kind, key):
            replaced = await _switch_file(db, kind, key, stored, expect, condition)
    except BaseException:
        await blobs.delete_file(db.bucket, stored.file_id)
        raise
    await blobs.discard_file(db.bucket, replaced)
    return stored


async def attachable(
    db: Database,
    kind: Kind,
    key: dict[str, Any],
    *,
    expect: dict[str, Any] | None = None,
    condition: FileCondition | None = None,
) -> dict[str, Any]:
    """The item a file may be attached to now (what `attach` checks before it reads a byte): it exists
    (NotFound), matches `expect` (Conflict) and `condition` holds on its file (PreconditionFailed)."""
    current = await get(db, kind, key)
    check_attachable(kind, key, current, expect=expect, condition=condition)
    return current


def check_attachable(
    kind: Kind,
    key: dict[str, Any],
    current: dict[str, Any],
    *,
    expect: dict[str, Any] | None = None,
    condition: FileCondition | None = None,
) -> None:
    """`attachable`'s checks on the item `current` as read."""
    for field_name, wanted in (expect or {}).items():
        if current.get(field_name) not in (None, wanted):
            raise Conflict(f"{kind.describe(key)} has {field_name}={current.get(field_name)!r}, not {wanted!r}")
    if not (condition or FileCondition()).holds(current, kind.id_field):
        raise _precondition_failed(kind, key, current)


async def rename_file(db: Database, file_id: Any, grid_name: str, fields: dict[str, Any]) -> bool:
    """Give a GridFS file its aerOS name (and fields); True when its files document changed."""
    result = await db.grid["fs.files"].update_one(
        {"_id": blobs.parse_file_id(file_id)}, {"$set": {"filename": grid_name, **fields}}
    )
    return bool(result.modified_count)


def _ident(kind: Kind, key: dict[str, Any]) -> tuple[str, ...]:
    return (kind.collection, *(str(key.get(k)) for k in kind.keys))


def item_lock(db: Database, kind: Kind, key: dict[str, Any]) -> AbstractAsyncContextManager[None]:
    """The lock every write of an item's document takes where the store's updates are not atomic."""
    return db.dialect.item_lock(_ident(kind, key))


def _precondition_failed(kind: Kind, key: dict[str, Any], doc: dict[str, Any]) -> PreconditionFailed:
    sha = doc.get("sha256") if doc.get(kind.id_field) is not None else None
    now_holds = f"its file has sha256 {sha}" if sha else "it has no file"
    return PreconditionFailed(f"the precondition on the file of {kind.describe(key)} failed: {now_holds}")


async def _switch_file(
    db: Database,
    kind: Kind,
    key: dict[str, Any],
    stored: StoredFile,
    expect: dict[str, Any],
    condition: FileCondition,
) -> Any:
    """Point the document at `stored` by compare-and-swap on the current file id (and, with a
    condition, on the stored sha256); return the old id.

    The swap only succeeds against the id we read, so each replaced file has exactly one owner
    that deletes it, even with writers in other processes. (findAndModify's pre-image would do on
    MongoDB, but FerretDB can return a stale one under concurrent load.)
    """
    coll = db.collection(kind.collection)
    expected = {name: {"$in": [value, None]} for name, value in expect.items()}
    guard = condition.query(kind.id_field)
    for _ in range(SWAP_ATTEMPTS):
        current = await coll.find_one({**key, **expected, **guard}, {kind.id_field: 1})
        if current is None:  # deleted or changed while we were uploading
            doc = await get(db, kind, key)  # NotFound when deleted
            if any(doc.get(name) not in (None, value) for name, value in expect.items()):
                raise Conflict(f"{kind.describe(key)} changed its {', '.join(expect)} during the upload")
            if not condition.holds(doc, kind.id_field):
                raise _precondition_failed(kind, key, doc)
            continue  # it changed back between the two reads: try again
        old = current.get(kind.id_field)
        # The stored sha256 is part of the swap's filter: the condition holds at the moment of the write.
        result = await coll.update_one(
            {"_id": current["_id"], kind.id_field: old, **guard},
            {"$set": {**stored.fields(kind.id_field), **expect, "updated_at": now()}},
        )
        if result.matched_count:
            return old
    raise Busy(f"{kind.describe(key)} is being replaced too often; try again")


async def open_file(db: Database, kind: Kind, key: dict[str, Any]) -> FileView:
    """The item's file, ready to stream; NotFound when the item or its file does not exist."""
    # A replacement may delete the file between reading the document and opening the file;
    # reading the document once more then finds the new one.
    for _ in range(3):
        doc = await get(db, kind, key)
        file_id = doc.get(kind.id_field)
        if file_id is None:
            raise NotFound(f"{kind.describe(key)} has no file yet")
        file_doc = await blobs.open_file(db, file_id)
        if file_doc is not None:
            return FileView(item=doc, file=file_doc, filename=download_name(kind, key, doc, file_doc), _db=db)
    raise NotFound(f"the file of {kind.describe(key)} is missing")


def download_name(kind: Kind, key: dict[str, Any], doc: dict[str, Any], file_doc: dict[str, Any]) -> str:
    """The name a download is offered under: the uploaded file's, else the GridFS file's, else one
    made from the key. aerOS named its GridFS files by path (`model/{name}/{version}`), which is no
    file name: such a name is passed over."""
    stored = file_doc.get("filename")
    if isinstance(stored, str) and stored and "/" not in stored:
        return doc.get("filename") or stored
    return doc.get("filename") or kind.default_filename(key)


async def delete(db: Database, kind: Kind, key: dict[str, Any]) -> None:
    """Delete the item, then its file (compare-and-swap on the file id, so a concurrent replacement
    cannot leave its new file behind unreferenced)."""
    coll = db.collection(kind.collection)
    async with item_lock(db, kind, key):
        for _ in range(SWAP_ATTEMPTS):
            doc = await coll.find_one(key, {kind.file_field: 1} if kind.file_field else {"_id": 1})
            if doc is None:
                raise kind.not_found(key)
            match = {"_id": doc["_id"]}
            if kind.file_field:
                match[kind.file_field] = doc.get(kind.file_field)
            if (await coll.delete_one(match)).deleted_count:
                break
        else:
            raise Busy(f"{kind.describe(key)} is being replaced too often; try again")
    if kind.file_field:
        await blobs.discard_file(db.bucket, doc.get(kind.file_field))
