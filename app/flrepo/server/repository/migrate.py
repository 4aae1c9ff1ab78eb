"""`flrepo migrate`: give items stored by aerOS 1.1.0 what the service records for its own.

aerOS wrote files with `GridFS.put` and recorded only their id, so a database it wrote (or restored
from its `mongodump`) has no size, sha256, CRC-32 or upload time beside an item, and no creation
time. The service serves such items as they are; this fills those fields in by streaming each file
once, so legacy files get an `ETag`, integrity checks and a place in "newest first" lists like new ones.

- Each item is updated on its own, right after its file has been read: an interrupted run keeps what
  it did, and the next run carries on with the rest (items that still lack a sha256 or a creation time).
- An item is only updated while it still points at the file that was read (compare-and-swap): a file
  replaced meanwhile already carries all these fields.
- Nothing is deleted and user data is never changed. A GridFS id stored as an ObjectId is rewritten as
  its text, as aerOS and the service store it. The file's own `fs.files` document gets its sha256 too.
- Every stored file gets aerOS's GridFS name (`model/{name}/{version}`, `weights/...` with its
  `training_id`, ...; kinds.GRID_NAMES): earlier flrepo versions named it after the uploaded file, and
  readers of the GridFS such as aerOS's orchestrator look files up by path. Only the `fs.files` document's
  name (and a weights file's `training_id`) changes; the uploaded file's name stays on the item.
- Natural keys held by more than one document (aerOS had no unique index) are reported: the service
  cannot build its unique index on that collection until they are resolved by hand.

`check` (`flrepo migrate --check`) changes nothing: it reports the duplicates, the collections without
their unique index (dropped under the service: the service re-creates it, unless a duplicate made
meanwhile stops it), the items pointing at a missing file and how many items a migration would touch.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from flrepo.server.repository.kinds import (
    CHECKPOINTS,
    COLLECTORS,
    MODELS,
    RESULTS,
    ROUNDS,
    STRATEGIES,
    TASKS,
    TRANSFORMATIONS,
    Kind,
)
from flrepo.server.storage import blobs
from flrepo.server.storage.db import Database, has_unique_index

log = logging.getLogger(__name__)

# The collections aerOS 1.1.0 wrote (tasks are the service's own and always complete).
LEGACY_KINDS: tuple[Kind, ...] = (MODELS, RESULTS, STRATEGIES, TRANSFORMATIONS, COLLECTORS)

# The kinds whose items have a file, each to be named as aerOS names it.
FILE_KINDS: tuple[Kind, ...] = (MODELS, RESULTS, STRATEGIES, TRANSFORMATIONS, CHECKPOINTS)
# Files looked up at a time while checking their names.
NAME_BATCH = 500

# Called after each item: (items done, items to do, what was done to the item).
Progress = Callable[[int, int, str], None]


@dataclass
class MigrateReport:
    """What a migration did and found."""

    items: int = 0  # items that needed something
    files_hashed: int = 0
    bytes_hashed: int = 0
    timestamps_added: int = 0
    ids_rewritten: int = 0
    files_renamed: int = 0  # GridFS files given their aerOS name
    changed_meanwhile: int = 0  # replaced or deleted while being migrated: left to their new state
    missing_files: list[str] = field(default_factory=list)  # items pointing at a file that does not exist
    damaged_files: list[str] = field(default_factory=list)  # files whose chunks do not add up to their length
    duplicates: list[str] = field(default_factory=list)  # natural keys held by several documents

    @property
    def clean(self) -> bool:
        return not (self.missing_files or self.damaged_files or self.duplicates)

    def summary(self) -> str:
        lines = [
            f"{self.items} items needed migrating: {self.files_hashed} files hashed ({self.bytes_hashed} bytes), "
            f"{self.timestamps_added} given timestamps, {self.ids_rewritten} file ids rewritten as text, "
            f"{self.files_renamed} GridFS files given their aerOS names"
            + (f", {self.changed_meanwhile} changed meanwhile (left as they are)" if self.changed_meanwhile else "")
        ]
        lines += [f"missing file: {item}" for item in self.missing_files]
        lines += [f"damaged file: {item}" for item in self.damaged_files]
        lines += [f"duplicate key (resolve by hand, then restart the service): {key}" for key in self.duplicates]
        return "\n".join(lines)


def _pending(kind: Kind) -> dict[str, Any]:
    """Items of `kind` this migration has something to do for."""
    wanted: list[dict[str, Any]] = [{"created_at": None}]
    if kind.file_field:
        wanted.append({kind.file_field: {"$ne": None}, "sha256": None})
    return {"$or": wanted}


def _created(doc: dict[str, Any], file_doc: dict[str, Any] | None) -> datetime:
    """The best guess of when aerOS stored the item: its ObjectId's time, else its file's upload."""
    if isinstance(doc.get("_id"), ObjectId):
        return doc["_id"].generation_time
    uploaded = (file_doc or {}).get("uploadDate")
    return uploaded if isinstance(uploaded, datetime) else datetime.now(UTC)


async def _hash_file(db: Database, file_doc: dict[str, Any]) -> tuple[int, str, int]:
    """(size, sha256, crc32) of a GridFS file, read once chunk by chunk; OSError when chunks are missing."""
    digest, crc, size = hashlib.sha256(), 0, 0
    async for chunk in blobs.read_range(db, file_doc, 0, int(file_doc["length"])):
        digest.update(chunk)
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
    return size, digest.hexdigest(), crc


async def _migrate_item(db: Database, kind: Kind, doc: dict[str, Any], report: MigrateReport) -> str:
    """Fill in one item's fields; return what was done (for progress)."""
    label = kind.describe(doc)
    updates: dict[str, Any] = {}
    file_doc: dict[str, Any] | None = None
    file_id = doc.get(kind.file_field) if kind.file_field else None
    done: list[str] = []
    if file_id is not None:
        file_doc = await blobs.open_file(db, file_id)
        if file_doc is None:
            report.missing_files.append(f"{label} -> {file_id}")
            done.append("its file is missing")
        elif doc.get("sha256") is None:
            try:
                size, sha, crc = await _hash_file(db, file_doc)
            except OSError as exc:
                report.damaged_files.append(f"{label}: {exc}")
                done.append("its file is damaged")
            else:
                updates.update(size=size, sha256=sha, crc32=crc)
                if doc.get("uploaded_at") is None and isinstance(file_doc.get("uploadDate"), datetime):
                    updates["uploaded_at"] = file_doc["uploadDate"]
                if file_doc.get("sha256") is None:
                    await db.grid["fs.files"].update_one({"_id": file_doc["_id"]}, {"$set": {"sha256": sha}})
                report.files_hashed += 1
                report.bytes_hashed += size
                done.append(f"{size} bytes hashed")
        if not isinstance(file_id, str):
            updates[kind.id_field] = str(file_id)
    if doc.get("created_at") is None:
        stamp = _created(doc, file_doc)
        updates["created_at"] = stamp
        if doc.get("updated_at") is None:
            updates["updated_at"] = stamp
    if not updates:
        return ", ".join(done) or "nothing to do"
    match: dict[str, Any] = {"_id": doc["_id"]}
    if kind.file_field:
        match[kind.file_field] = file_id
    result = await db.collection(kind.collection).update_one(match, {"$set": updates})
    if not result.matched_count:
        report.changed_meanwhile += 1
        return "changed meanwhile; left as it is"
    if "created_at" in updates:
        report.timestamps_added += 1
    if kind.file_field and kind.id_field in updates:
        report.ids_rewritten += 1
    return ", ".join([*done, "timestamps added"] if "created_at" in updates else done) or "updated"


def _naming(kind: Kind, doc: dict[str, Any], file_doc: dict[str, Any]) -> dict[str, Any]:
    """What gives `file_doc` its aerOS name and fields; empty when it has them."""
    wanted, name = kind.grid_name(doc), file_doc.get("filename")
    changes: dict[str, Any] = {}
    # aerOS named weights by the configuration in the upload's path, whatever the result said: kept.
    aeros_weights = f"weights/{doc.get('model_name')}/{doc.get('model_version')}/"
    if name != wanted and not (kind is RESULTS and isinstance(name, str) and name.startswith(aeros_weights)):
        changes["filename"] = wanted
    changes.update({k: v for k, v in kind.grid_fields(doc).items() if file_doc.get(k) != v})
    return changes


async def _misnamed(db: Database, kind: Kind) -> list[tuple[str, Any, dict[str, Any]]]:
    """(item, file id, changes) for each file of `kind` whose GridFS name is not aerOS's."""
    fields = dict.fromkeys((*kind.keys, "configuration_id", kind.id_field), 1)
    docs = await db.collection(kind.collection).find({kind.id_field: {"$ne": None}}, fields).to_list()
    found: list[tuple[str, Any, dict[str, Any]]] = []
    for start in range(0, len(docs), NAME_BATCH):
        batch = docs[start : start + NAME_BATCH]
        ids = [blobs.parse_file_id(doc[kind.id_field]) for doc in batch]
        cursor = db.grid["fs.files"].find({"_id": {"$in": ids}}, {"filename": 1, "training_id": 1})
        files = {file_doc["_id"]: file_doc async for file_doc in cursor}
        for doc, file_id in zip(batch, ids, strict=True):
            changes = _naming(kind, doc, files[file_id]) if file_id in files else {}
            if changes:
                found.append((kind.describe(doc), file_id, changes))
    return found


async def name_files(db: Database, report: MigrateReport, progress: Progress | None = None) -> None:
    """Give every item's GridFS file aerOS's name (see the module's docstring)."""
    todo = [entry for kind in FILE_KINDS for entry in await _misnamed(db, kind)]
    for number, (label, file_id, changes) in enumerate(todo, start=1):
        result = await db.grid["fs.files"].update_one({"_id": file_id}, {"$set": changes})
        report.files_renamed += int(bool(result.modified_count))
        if progress is not None:
            progress(number, len(todo), f"{label}: GridFS file named {changes.get('filename', 'as before')}")


async def duplicate_keys(db: Database, kind: Kind) -> list[str]:
    """Natural keys of `kind` held by more than one document."""
    group = {"_id": {k: f"${k}" for k in kind.keys}, "count": {"$sum": 1}}
    cursor = await db.collection(kind.collection).aggregate([{"$group": group}, {"$match": {"count": {"$gt": 1}}}])
    return [f"{kind.describe(row['_id'])}: {row['count']} documents" async for row in cursor]


async def migrate(db: Database, progress: Progress | None = None) -> MigrateReport:
    """Migrate every legacy item of the repository (see the module's docstring)."""
    report = MigrateReport()
    # The ids first, then one item at a time: a cursor idle while a large file streams would time out.
    todo: list[tuple[Kind, Any]] = []
    for kind in LEGACY_KINDS:
        report.duplicates += await duplicate_keys(db, kind)
        ids = await db.collection(kind.collection).find(_pending(kind), {"_id": 1}).sort("_id", 1).to_list()
        todo += [(kind, doc["_id"]) for doc in ids]
    report.items = len(todo)
    for number, (kind, doc_id) in enumerate(todo, start=1):
        doc = await db.collection(kind.collection).find_one({"_id": doc_id})
        if doc is None:
            report.changed_meanwhile += 1
            what = "deleted meanwhile"
        else:
            what = await _migrate_item(db, kind, doc, report)
        log.debug("migrate %d/%d %s: %s", number, len(todo), kind.describe(doc or {}), what)
        if progress is not None:
            progress(number, len(todo), f"{kind.describe(doc or {})}: {what}")
    await name_files(db, report, progress)
    log.info("migration done: %s", report.summary().splitlines()[0])
    return report


# Every collection with a natural key (storage.db.NATURAL_KEYS): a duplicate can appear in any of them
# while its unique index is missing.
KEYED_KINDS: tuple[Kind, ...] = (MODELS, RESULTS, STRATEGIES, TRANSFORMATIONS, TASKS, CHECKPOINTS, COLLECTORS, ROUNDS)


@dataclass
class CheckReport:
    """What `check` found; it changes nothing."""

    duplicates: list[str] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)  # collections holding documents but no unique index
    missing_files: list[str] = field(default_factory=list)
    to_migrate: int = 0  # items `migrate` would fill in

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.unindexed or self.missing_files)

    def summary(self) -> str:
        lines = [f"duplicate key (resolve by hand; the service then rebuilds its index): {k}" for k in self.duplicates]
        lines += [f"no unique index on {name} (the running service re-creates it)" for name in self.unindexed]
        lines += [f"missing file: {item}" for item in self.missing_files]
        lines.append(f"{self.to_migrate} items to migrate (`flrepo migrate`)")
        lines.append("check: clean" if self.clean else "check: problems found")
        return "\n".join(lines)


async def _missing_files(db: Database, kind: Kind) -> list[str]:
    """Items of `kind` that point at a GridFS file that does not exist."""
    fields = dict.fromkeys((*kind.keys, kind.id_field), 1)
    docs = await db.collection(kind.collection).find({kind.id_field: {"$ne": None}}, fields).to_list()
    missing: list[str] = []
    for start in range(0, len(docs), NAME_BATCH):
        batch = docs[start : start + NAME_BATCH]
        ids = [blobs.parse_file_id(doc[kind.id_field]) for doc in batch]
        found = {f["_id"] async for f in db.grid["fs.files"].find({"_id": {"$in": ids}}, {"_id": 1})}
        pairs = zip(batch, ids, strict=True)
        missing += [f"{kind.describe(doc)} -> {doc[kind.id_field]}" for doc, i in pairs if i not in found]
    return missing


async def check(db: Database) -> CheckReport:
    """Report what needs a person or a migration, reading only (see the module's docstring)."""
    report = CheckReport()
    for kind in KEYED_KINDS:
        coll = db.collection(kind.collection)
        if not await coll.find_one({}, {"_id": 1}):
            continue
        report.duplicates += await duplicate_keys(db, kind)
        if not await has_unique_index(coll):
            report.unindexed.append(f"{db.meta.name}.{kind.collection}")
    for kind in FILE_KINDS:
        report.missing_files += await _missing_files(db, kind)
    for kind in LEGACY_KINDS:
        report.to_migrate += await db.collection(kind.collection).count_documents(_pending(kind))
    return report
