"""`flrepo dump`: the repository's documents and files into one archive (format: `backup.format`)."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridfs.errors import GridFSError

from flrepo.server.backup.format import (
    KINDS,
    MANIFEST,
    SUMS,
    DumpError,
    DumpReport,
    FileEntry,
    file_member,
    manifest_bytes,
    sums_bytes,
)
from flrepo.server.backup.tar import TarFileWriter
from flrepo.server.repository.kinds import Kind
from flrepo.server.settings import Settings
from flrepo.server.storage import blobs
from flrepo.server.storage.db import Database

log = logging.getLogger(__name__)


async def dump(settings: Settings, archive: Path) -> DumpReport:
    """Write every document of the repository's collections and every file they point at to `archive`.

    The archive is written under a temporary name next to `archive` and renamed when complete, so a
    failed dump never leaves something that looks like a finished archive. Items changing while the
    dump runs are taken as they are when read; a file replaced meanwhile is followed to its new version.
    """
    archive = Path(archive)
    partial = archive.with_name(archive.name + ".partial")
    report = DumpReport(archive=archive)
    db = Database.connect(settings, bounded=False)
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
