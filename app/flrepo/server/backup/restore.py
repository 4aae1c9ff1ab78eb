"""`flrepo restore`: pass 1 (`verify`), then pass 2 writes; merges with force, else undoes a failed restore."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from pymongo.errors import DuplicateKeyError

from flrepo.server.backup.format import KINDS, ArchiveError, DumpReport, FileEntry, Plan
from flrepo.server.backup.tar import TarReader
from flrepo.server.backup.verify import refuse_conflicting_files, refuse_non_empty, verify_archive
from flrepo.server.repository.kinds import Kind
from flrepo.server.settings import Settings
from flrepo.server.storage import blobs
from flrepo.server.storage.db import Database
from flrepo.server.storage.gridfs import GridWriter

log = logging.getLogger(__name__)

# fs.files fields GridFS sets itself when a file is written; everything else is copied back with set().
_GRIDFS_OWN_FIELDS = frozenset({"_id", "length", "chunkSize", "uploadDate", "filename", "metadata", "md5"})


async def restore(settings: Settings, archive: Path, *, force: bool = False) -> DumpReport:
    """Restore an archive written by `dump` into the databases named by `settings`.

    Verifies the whole archive before writing anything (:class:`ArchiveError` if any digest, size or
    structure check fails). Without `force` the target must be empty (:class:`TargetNotEmptyError`);
    with `force` the archive is merged in, archived items replacing same-key items (rules: `backup.format`).
    """
    archive = Path(archive)
    db = Database.connect(settings, bounded=False)
    try:
        if not force:
            await refuse_non_empty(db, archive)
        plan = await asyncio.to_thread(verify_archive, archive, settings.restore_max_manifest_bytes)
        if force:
            await refuse_conflicting_files(db, plan)
        report = DumpReport(archive=archive)
        await db.ensure_indexes()
        await _write(db, archive, plan, force, report)
    finally:
        await db.close()
    log.info("restored %s", report.summary())
    return report


async def _write(db: Database, archive: Path, plan: Plan, force: bool, report: DumpReport) -> None:
    """Pass 2: files, then documents, then the files' original upload dates."""
    uploaded: list[Any] = []
    inserted: list[tuple[str, Any]] = []
    try:
        await _upload_files(db, archive, plan, report, uploaded)
        for kind in KINDS:
            docs = plan.collections.get(kind.collection, [])
            if force:
                await _merge_documents(db, kind, docs, plan, report)
            elif docs:
                # Recorded first: an insert_many failing half-way has written some of them.
                inserted.extend((kind.collection, d["_id"]) for d in docs)
                await db.collection(kind.collection).insert_many(docs, ordered=True)
            report.documents[kind.collection] = len(docs)
        # Only now that documents point at them may the files look old to an orphan sweep.
        restored = set(uploaded)
        for entry in plan.files:
            if entry.file_id in restored and isinstance(entry.file.get("uploadDate"), datetime):
                await db.grid["fs.files"].update_one(
                    {"_id": entry.file_id}, {"$set": {"uploadDate": entry.file["uploadDate"]}}
                )
    except BaseException:
        if not force:
            await _undo(db, uploaded, inserted)
        raise
    report.files = len(plan.files)
    report.file_bytes = sum(e.length for e in plan.files)


async def _upload_files(db: Database, archive: Path, plan: Plan, report: DumpReport, uploaded: list[Any]) -> None:
    by_member = {entry.member: entry for entry in plan.files}
    reader = TarReader(archive)
    await asyncio.to_thread(reader.open)
    try:
        while (item := await asyncio.to_thread(reader.next_member)) is not None:
            member, stream = item
            entry = by_member.get(member.name)
            if entry is None:
                continue  # manifest and checksums: already read in pass 1
            if await db.grid["fs.files"].count_documents({"_id": entry.file_id}, limit=1):
                report.files_already_present += 1  # force only: same bytes, checked before writing
                continue
            await _upload_one(db, archive, reader, stream, entry, uploaded)
    finally:
        await asyncio.to_thread(reader.close)


async def _upload_one(
    db: Database, archive: Path, reader: TarReader, stream: IO[bytes], entry: FileEntry, uploaded: list[Any]
) -> None:
    file = entry.file
    writer = GridWriter(
        db.grid,
        file.get("filename") or "",
        int(file.get("chunkSize") or db.chunk_bytes),
        file.get("metadata"),
        file_id=entry.file_id,
    )
    digest = hashlib.sha256()
    try:
        while chunk := await asyncio.to_thread(reader.read, stream):
            digest.update(chunk)
            await writer.write(chunk)
        if digest.hexdigest() != entry.sha256:
            # The archive changed on disk since pass 1.
            raise ArchiveError(f"{archive}: {entry.member} changed while being restored")
        await writer.close(**{key: value for key, value in file.items() if key not in _GRIDFS_OWN_FIELDS})
    except BaseException:
        await writer.abort()
        raise
    uploaded.append(entry.file_id)


async def _merge_documents(
    db: Database, kind: Kind, docs: list[dict[str, Any]], plan: Plan, report: DumpReport
) -> None:
    coll = db.collection(kind.collection)
    archived_files = {entry.file_id for entry in plan.files}
    for doc in docs:
        key = {k: doc.get(k) for k in kind.keys}
        existing = await coll.find_one(key)
        if existing is None:
            try:
                await coll.insert_one(doc)
            except DuplicateKeyError:
                # Same _id, different natural key (renamed since the dump): keep both, new _id.
                await coll.insert_one({k: v for k, v in doc.items() if k != "_id"})
            continue
        await coll.replace_one({"_id": existing["_id"]}, {k: v for k, v in doc.items() if k != "_id"})
        report.replaced += 1
        if kind.file_field:
            old = blobs.parse_file_id(existing.get(kind.file_field))
            if old is not None and old != blobs.parse_file_id(doc.get(kind.file_field)) and old not in archived_files:
                await blobs.delete_file(db.bucket, old)


async def _undo(db: Database, uploaded: list[Any], inserted: list[tuple[str, Any]]) -> None:
    """Remove what a failed restore into an empty target wrote (best effort: the database may be why)."""
    try:
        for name, doc_id in inserted:
            await db.collection(name).delete_one({"_id": doc_id})
        for file_id in uploaded:
            await blobs.delete_file(db.bucket, file_id)
    except Exception:
        log.exception("could not remove everything a failed restore wrote; the orphan sweep removes the files")
