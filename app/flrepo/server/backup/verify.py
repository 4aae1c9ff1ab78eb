"""Pass 1 of a restore: read and check the whole archive, and check the target; write nothing."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from flrepo.server.backup.format import (
    KINDS,
    MANIFEST,
    SUMS,
    ArchiveError,
    Plan,
    TargetNotEmptyError,
    parse_manifest,
    parse_sums,
    plan_from_manifest,
)
from flrepo.server.backup.tar import TarReader
from flrepo.server.backup.validate import check_consistency, check_documents
from flrepo.server.storage.db import Database

DEFAULT_MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def verify_archive(archive: Path, max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES) -> Plan:
    """Pass 1: read the whole archive, check every digest, the manifest and every document (with the
    API's schemas); return what to write. The manifest and checksum list are the only members held in
    memory, and only up to `max_manifest_bytes` (a small compressed archive can expand to gigabytes).

    Blocking file I/O: run it in a worker thread.
    """
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such file")
    actual: dict[str, str] = {}
    sizes: dict[str, int] = {}
    manifest_data: bytes | None = None
    sums_data: bytes | None = None
    reader = TarReader(archive)
    reader.open()
    try:
        while (item := reader.next_member()) is not None:
            member, stream = item
            if member.name in actual:
                raise ArchiveError(f"{archive}: member {member.name!r} appears twice")
            keep = member.name in (MANIFEST, SUMS)
            if keep and member.size > max_manifest_bytes:
                raise ArchiveError(
                    f"{archive}: {member.name} is {member.size} bytes, over the {max_manifest_bytes}-byte limit "
                    "(FLREPO_RESTORE_MAX_MANIFEST_BYTES); not restoring"
                )
            kept = io.BytesIO()
            digest = hashlib.sha256()
            while chunk := reader.read(stream):
                digest.update(chunk)
                if keep:
                    kept.write(chunk)
            actual[member.name] = digest.hexdigest()
            sizes[member.name] = member.size
            if member.name == MANIFEST:
                manifest_data = kept.getvalue()
            elif member.name == SUMS:
                sums_data = kept.getvalue()
        reader.finish()
    finally:
        reader.close()
    if manifest_data is None or sums_data is None:
        raise ArchiveError(f"{archive}: not an flrepo dump (no {MANIFEST} or {SUMS}; truncated?)")

    listed = parse_sums(archive, sums_data)
    expected_members = set(actual) - {SUMS}
    if set(listed) != expected_members:
        extra = sorted(expected_members - set(listed))
        absent = sorted(set(listed) - expected_members)
        raise ArchiveError(f"{archive}: members not in {SUMS}: {extra}; listed but absent: {absent}")
    bad = sorted(name for name, sha in listed.items() if actual[name] != sha)
    if bad:
        raise ArchiveError(f"{archive}: sha256 mismatch in {', '.join(bad)}; the archive is corrupt")

    manifest = parse_manifest(archive, manifest_data)
    del manifest_data  # the parsed documents are what pass 2 needs
    plan = plan_from_manifest(archive, manifest, actual, sizes)
    check_documents(archive, plan.collections)
    check_consistency(archive, plan)
    return plan


async def refuse_non_empty(db: Database, archive: Path) -> None:
    """Without force: no document in any dumped collection and no GridFS file (indexes do not count)."""
    for kind in KINDS:
        if await db.collection(kind.collection).count_documents({}, limit=1):
            raise TargetNotEmptyError(
                f"database {db.meta.name!r} already holds {kind.collection}; not restoring {archive} "
                "(restore into an empty database, or merge: force=True, flrepo restore --force)"
            )
    if await db.grid["fs.files"].count_documents({}, limit=1):
        raise TargetNotEmptyError(f"database {db.grid.name!r} already holds GridFS files; not restoring {archive}")


async def refuse_conflicting_files(db: Database, plan: Plan) -> None:
    """With force: a GridFS id already in the target must hold the very same bytes."""
    for entry in plan.files:
        existing = await db.grid["fs.files"].find_one({"_id": entry.file_id}, {"length": 1, "sha256": 1})
        if existing is None:
            continue
        if existing.get("length") != entry.length or existing.get("sha256") not in (None, entry.sha256):
            raise ArchiveError(f"GridFS file {entry.file_id} exists in the target with different content; not merging")
