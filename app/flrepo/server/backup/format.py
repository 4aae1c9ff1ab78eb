"""Portable dump and restore of a whole repository: metadata documents and their GridFS files in one tar.

``flrepo dump ARCHIVE`` / ``flrepo restore ARCHIVE`` exist because ``mongodump``/``mongorestore`` are
not installed everywhere, and because an archive made through the service's own storage layer can be
restored into any deployment (another database name, MongoDB or FerretDB, Docker or Kubernetes).

Archive layout (a POSIX/PAX tar; gzip-compressed when the name ends in ``.gz`` or ``.tgz``)::

    files/000001 ...   one member per GridFS file, its bytes exactly as stored
    manifest.json      MongoDB extended JSON (canonical, so ids, dates and number types survive):
                         format, version, created_at, source database names,
                         collections: {models, results, strategies, transformations, tasks, collectors: [documents]},
                         documents_sha256: {collection: sha256 of its documents' canonical JSON},
                         files: [{member, length, sha256, file: the fs.files document}],
                         missing_files: [references whose file was already gone at dump time]
    SHA256SUMS         ``sha256sum -c`` format, one line per member above

Files come first because their digests are only known once they have been streamed; the manifest and
the checksum list come last for the same reason. Everything streams in chunks both ways: GridFS chunks
into the tar on dump, tar blocks into GridFS on restore; file I/O runs in worker threads so the event
loop never blocks on the disk.

Restore is two passes over the archive:

1. **verify** (reads everything, writes nothing): every member's sha256 against ``SHA256SUMS`` and the
   manifest, every collection's documents against ``documents_sha256``, the manifest's structure. Any
   mismatch, a truncated or unreadable archive, unknown or duplicate members: :class:`ArchiveError`.
2. **write**: files first (uploaded with their original GridFS ids, so documents point at them
   unchanged; their digests are checked again while streaming), then documents (with their original
   ``_id``), then the files' original ``uploadDate``. Restored files carry a fresh upload date until
   their documents exist, so a service sweeping orphan files concurrently cannot take them for orphans.

Target database rules:

* by default the target must be empty — no document in any dumped collection and no GridFS file
  (indexes alone do not count) — else :class:`TargetNotEmptyError` before anything is read or written.
  If writing fails half-way, what this restore wrote is removed again, leaving the target empty.
* ``force=True`` merges into a non-empty target: an archived item replaces the item with the same natural
  key (model name + version, strategy name, ...; the target keeps its ``_id``, the replaced item's file is
  deleted once nothing points at it), archived items without a counterpart are added, and items only in
  the target are kept. A GridFS file whose id already exists is kept when its length and sha256 match the
  archive and refused (before anything is written) otherwise. A failure half-way leaves a partial merge;
  files without documents are then removed by the service's orphan sweep.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from flrepo.server.repository.kinds import ALL_KINDS, Kind

FORMAT = "flrepo-dump"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
FILES_DIR = "files/"
KINDS: tuple[Kind, ...] = ALL_KINDS
# Canonical mode keeps every BSON type distinct (int32/int64/double, dates to the millisecond, ObjectId).
JSON_OPTIONS = JSONOptions(json_mode=JSONMode.CANONICAL, tz_aware=True, tzinfo=UTC)


class DumpError(Exception):
    """Base class of the errors `flrepo dump` / `flrepo restore` report without a traceback."""


class ArchiveError(DumpError):
    """The archive is corrupt, truncated, tampered with or not an flrepo dump; nothing was written."""


class TargetNotEmptyError(DumpError):
    """Restore without `force` into a database that already holds items; nothing was written."""


@dataclass
class DumpReport:
    """What a dump wrote or a restore restored."""

    archive: Path
    documents: dict[str, int] = field(default_factory=dict)
    files: int = 0
    file_bytes: int = 0
    # dump: documents whose file was already gone (kept as they are, pointing at nothing)
    missing_files: int = 0
    # restore with force: documents that replaced an existing item / files already present
    replaced: int = 0
    files_already_present: int = 0

    def summary(self) -> str:
        docs = ", ".join(f"{n} {name}" for name, n in self.documents.items())
        text = f"{self.archive}: {docs}; {self.files} files, {self.file_bytes} bytes"
        if self.missing_files:
            text += f"; {self.missing_files} documents point at files that were already missing"
        if self.replaced:
            text += f"; {self.replaced} existing items replaced"
        if self.files_already_present:
            text += f"; {self.files_already_present} files were already present"
        return text


@dataclass(frozen=True)
class FileEntry:
    """One archived GridFS file: its member, its length and sha256, its fs.files document."""

    member: str
    length: int
    sha256: str
    file: dict[str, Any]  # the fs.files document

    @property
    def file_id(self) -> Any:
        return self.file["_id"]


@dataclass
class Plan:
    """A verified archive: what pass 2 writes."""

    collections: dict[str, list[dict[str, Any]]]
    files: list[FileEntry]


def documents_sha256(docs: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json_util.dumps(docs, json_options=JSON_OPTIONS).encode()).hexdigest()


def file_member(number: int) -> str:
    """The member name of the `number`-th file (from 1)."""
    return f"{FILES_DIR}{number:06d}"


def manifest_bytes(
    *,
    created_at: datetime,
    source: dict[str, str],
    collections: dict[str, list[dict[str, Any]]],
    files: list[FileEntry],
    missing_files: list[dict[str, Any]],
) -> bytes:
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created_at": created_at,
        "source": source,
        "collections": collections,
        "documents_sha256": {name: documents_sha256(docs) for name, docs in collections.items()},
        "files": [{"member": e.member, "length": e.length, "sha256": e.sha256, "file": e.file} for e in files],
        "missing_files": missing_files,
    }
    return json_util.dumps(manifest, json_options=JSON_OPTIONS, indent=1).encode()


def sums_bytes(files: list[FileEntry], manifest_sha256: str) -> bytes:
    """`SHA256SUMS`: one line per file member, then the manifest's."""
    return ("".join(f"{e.sha256}  {e.member}\n" for e in files) + f"{manifest_sha256}  {MANIFEST}\n").encode()


def parse_manifest(archive: Path, data: bytes) -> Any:
    try:
        return json_util.loads(data, json_options=JSON_OPTIONS)
    except ValueError as exc:
        raise ArchiveError(f"{archive}: {MANIFEST} is not valid extended JSON ({exc})") from exc


def parse_sums(archive: Path, data: bytes) -> dict[str, str]:
    """`SHA256SUMS` as {member: sha256}."""
    listed: dict[str, str] = {}
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{archive}: {SUMS} is not text") from exc
    for line in text.splitlines():
        sha, sep, name = line.partition("  ")
        if not sep or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) or name in listed:
            raise ArchiveError(f"{archive}: malformed {SUMS} line {line!r}")
        listed[name] = sha
    return listed


def plan_from_manifest(archive: Path, manifest: Any, actual: dict[str, str], sizes: dict[str, int]) -> Plan:
    """Check the manifest against itself and against the archive's members (`actual`: their sha256,
    `sizes`: their lengths); return what pass 2 writes."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"{archive}: not an flrepo dump")
    if manifest.get("version") != FORMAT_VERSION:
        raise ArchiveError(f"{archive}: dump format version {manifest.get('version')!r} is not supported")
    try:
        collections = manifest["collections"]
        sums = manifest["documents_sha256"]
        known = {kind.collection for kind in KINDS}
        if not set(collections) <= known or set(sums) != set(collections):
            raise ArchiveError(f"{archive}: unexpected collections {sorted(set(collections) - known)}")
        for name, docs in collections.items():
            if not isinstance(docs, list) or not all(isinstance(d, dict) and "_id" in d for d in docs):
                raise ArchiveError(f"{archive}: malformed documents of {name}")
            if documents_sha256(docs) != sums[name]:
                raise ArchiveError(f"{archive}: the documents of {name} do not match their sha256")
        files = [
            FileEntry(member=f["member"], length=int(f["length"]), sha256=f["sha256"], file=f["file"])
            for f in manifest["files"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveError(f"{archive}: malformed {MANIFEST} ({exc!r})") from exc
    members = {name for name in actual if name.startswith(FILES_DIR)}
    if {f.member for f in files} != members or len(files) != len(members):
        raise ArchiveError(f"{archive}: the files in {MANIFEST} and in the archive differ")
    for f in files:
        if actual[f.member] != f.sha256 or sizes[f.member] != f.length or f.file.get("length") != f.length:
            raise ArchiveError(f"{archive}: {f.member} does not match its manifest entry")
    return Plan(collections=collections, files=files)
