"""`flrepo dump`: the repository's documents and files into one archive (format: `backup.format`)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gridfs.errors import GridFSError
from pymongo.errors import DuplicateKeyError

from flrepo.server.backup.format import (
    KINDS,
    MANIFEST,
    SUMS,
    ArchiveError,
    DumpError,
    DumpReport,
    FileEntry,
    Plan,
    TargetNotEmptyError,
    file_member,
    manifest_bytes,
    parse_manifest,
    parse_sums,
    plan_from_manifest,
    sums_bytes,
)
from flrepo.server.backup.tar import TarFileWriter, TarReader
from flrepo.server.repository.kinds import Kind
from flrepo.server.settings import Settings
from flrepo.server.storage import blobs
from flrepo.server.storage.db import Database
from flrepo.server.storage.gridfs import GridWriter

log = logging.getLogger(__name__)

# fs.files fields GridFS sets itself when a file is written; everything else is copied back with set().
_GRIDFS_OWN_FIELDS = frozenset({"_id", "length", "chunkSize", "uploadDate", "filename", "metadata", "md5"})


# --------------------------------------------------------------------------------------------- dump


async def dump(settings: Settings, archive: Path) -> DumpReport:
    """Write every document of the repository's collections and every file they point at to `archive`.

    The archive is written under a temporary name next to `archive` and renamed when complete, so a
    failed dump never leaves something that looks like a finished archive. Items changing while the
    dump runs are taken as they are when read; a file replaced meanwhile is followed to its new version.
    """
    archive = Path(archive)
    partial = archive.with_name(archive.name + ".partial")
    report = DumpReport(archive=archive)
    db = Database.connect(settings)
    # Decided on the final name: the partial file's name ends in ".partial".
    writer = TarFileWriter(partial, compress=archive.name.endswith((".gz", ".tgz")))
    try:
        await db.ping()  # fail before creating any file when the database is unreachable
        await writer.open()
        collections: dict[str, list[dict[str, Any]]] = {}
        entries: list[FileEntry] = []
        dumped: dict[Any, FileEntry] = {}
        missing: list[dict[str, Any]] = []
        for kind in KINDS:
            docs: list[dict[str, Any]] = []
            # Read the documents before streaming any file: a cursor left idle while a large file
            # streams would be closed by the server (10-minute idle timeout). Metadata is small.
            for doc in await db.collection(kind.collection).find({}).sort("_id", 1).to_list():
                if kind.file_field and doc.get(kind.file_field) is not None:
                    followed = await _dump_file(db, writer, kind, doc, dumped, entries, missing)
                    if followed is None:
                        continue  # deleted while we were dumping
                    doc = followed
                docs.append(doc)
            collections[kind.collection] = docs
            report.documents[kind.collection] = len(docs)
        now = datetime.now(UTC)
        manifest = manifest_bytes(
            created_at=now,
            source={"db_name": settings.db_name, "gridfs_db_name": settings.gridfs_db_name},
            collections=collections,
            files=entries,
            missing_files=missing,
        )
        manifest_sha = await writer.add_bytes(MANIFEST, manifest, now.timestamp())
        await writer.add_bytes(SUMS, sums_bytes(entries, manifest_sha), now.timestamp())
        await writer.finish()
        await asyncio.to_thread(os.replace, partial, archive)
    except BaseException:
        await writer.close()
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        raise
    finally:
        await db.close()
    report.files = len(entries)
    report.file_bytes = sum(e.length for e in entries)
    report.missing_files = len(missing)
    log.info("dumped %s", report.summary())
    return report


async def _dump_file(
    db: Database,
    writer: TarFileWriter,
    kind: Kind,
    doc: dict[str, Any],
    dumped: dict[Any, FileEntry],
    entries: list[FileEntry],
    missing: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """Stream the file `doc` points at into the archive; return the document as finally seen.

    A concurrent replacement deletes the old file after switching the document, so a vanished file
    means: read the document again and follow it (None when the document itself was deleted).
    """
    field_name = kind.id_field
    for _ in range(5):
        file_id = blobs.parse_file_id(doc[field_name])
        if file_id in dumped:
            return doc
        files_doc = await blobs.open_file(db, file_id)
        if files_doc is not None:
            length = int(files_doc["length"])
            member = file_member(len(entries) + 1)
            uploaded = files_doc.get("uploadDate")
            mtime = uploaded.timestamp() if isinstance(uploaded, datetime) else 0.0
            try:
                sha = await writer.add(member, length, mtime, blobs.read_range(db, files_doc, 0, length))
            except (OSError, GridFSError) as exc:
                # Its tar header is written already, so no retry: a file deleted while being read (or a
                # full disk) ends the dump; the partial archive is removed.
                raise DumpError(
                    f"{kind.describe(doc)}: could not copy file {file_id} into the archive ({exc})"
                ) from exc
            if files_doc.get("sha256") not in (None, sha):
                # Dump what is there (a backup of damaged data beats none), but say so loudly.
                log.error("%s: stored file %s no longer matches its recorded sha256", kind.describe(doc), file_id)
            entry = FileEntry(member=member, length=length, sha256=sha, file=files_doc)
            dumped[file_id] = entry
            entries.append(entry)
            return doc
        current = await db.collection(kind.collection).find_one({"_id": doc["_id"]})
        if current is None:
            return None
        if current.get(field_name) == doc.get(field_name):
            log.warning("%s points at file %s, which does not exist; dumped as is", kind.describe(doc), file_id)
            missing.append({"collection": kind.collection, "_id": doc["_id"], "file_id": doc[field_name]})
            return current
        doc = current
        if doc.get(field_name) is None:
            return doc
    raise DumpError(f"{kind.describe(doc)}: its file keeps being replaced; dump again later")


# ------------------------------------------------------------------------------------------ restore


async def restore(settings: Settings, archive: Path, *, force: bool = False) -> DumpReport:
    """Restore an archive written by :func:`dump` into the databases named by `settings`.

    Verifies the whole archive before writing anything (:class:`ArchiveError` if any digest, size or
    structure check fails). Without `force` the target must be empty (:class:`TargetNotEmptyError`);
    with `force` the archive is merged in, archived items replacing same-key items (module docstring).
    """
    archive = Path(archive)
    db = Database.connect(settings)
    try:
        if not force:
            await _refuse_non_empty(db, archive)
        plan = await asyncio.to_thread(_verify, archive)
        if force:
            await _refuse_conflicting_files(db, plan)
        report = DumpReport(archive=archive)
        await db.ensure_indexes()
        await _write(db, archive, plan, force, report)
    finally:
        await db.close()
    log.info("restored %s", report.summary())
    return report


async def _refuse_non_empty(db: Database, archive: Path) -> None:
    for kind in KINDS:
        if await db.collection(kind.collection).count_documents({}, limit=1):
            raise TargetNotEmptyError(
                f"database {db.meta.name!r} already holds {kind.collection}; not restoring {archive} "
                "(restore into an empty database, or merge: force=True, flrepo restore --force)"
            )
    if await db.grid["fs.files"].count_documents({}, limit=1):
        raise TargetNotEmptyError(f"database {db.grid.name!r} already holds GridFS files; not restoring {archive}")


def _verify(archive: Path) -> Plan:
    """Pass 1: read the whole archive, check every digest and the manifest; return what to write."""
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such file")
    actual: dict[str, str] = {}
    sizes: dict[str, int] = {}
    manifest_bytes: bytes | None = None
    sums_bytes: bytes | None = None
    reader = TarReader(archive)
    reader.open()
    try:
        while (item := reader.next_member()) is not None:
            member, stream = item
            if member.name in actual:
                raise ArchiveError(f"{archive}: member {member.name!r} appears twice")
            keep = member.name in (MANIFEST, SUMS)
            kept = io.BytesIO()
            digest = hashlib.sha256()
            while chunk := reader.read(stream):
                digest.update(chunk)
                if keep:
                    kept.write(chunk)
            actual[member.name] = digest.hexdigest()
            sizes[member.name] = member.size
            if member.name == MANIFEST:
                manifest_bytes = kept.getvalue()
            elif member.name == SUMS:
                sums_bytes = kept.getvalue()
        reader.finish()
    finally:
        reader.close()
    if manifest_bytes is None or sums_bytes is None:
        raise ArchiveError(f"{archive}: not an flrepo dump (no {MANIFEST} or {SUMS}; truncated?)")

    listed = parse_sums(archive, sums_bytes)
    expected_members = set(actual) - {SUMS}
    if set(listed) != expected_members:
        extra = sorted(expected_members - set(listed))
        absent = sorted(set(listed) - expected_members)
        raise ArchiveError(f"{archive}: members not in {SUMS}: {extra}; listed but absent: {absent}")
    bad = sorted(name for name, sha in listed.items() if actual[name] != sha)
    if bad:
        raise ArchiveError(f"{archive}: sha256 mismatch in {', '.join(bad)}; the archive is corrupt")

    return plan_from_manifest(archive, parse_manifest(archive, manifest_bytes), actual, sizes)


async def _refuse_conflicting_files(db: Database, plan: Plan) -> None:
    """With force: a GridFS id already in the target must hold the very same bytes."""
    for entry in plan.files:
        existing = await db.grid["fs.files"].find_one({"_id": entry.file_id}, {"length": 1, "sha256": 1})
        if existing is None:
            continue
        if existing.get("length") != entry.length or existing.get("sha256") not in (None, entry.sha256):
            raise ArchiveError(f"GridFS file {entry.file_id} exists in the target with different content; not merging")


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
