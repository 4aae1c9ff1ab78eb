"""Portable dump and restore of a whole repository (`flrepo dump` / `flrepo restore`).

The archive format and the restore rules are documented in `format`; `dump` writes an archive,
`restore` verifies it (`verify`, pass 1) before writing it (pass 2); `tar` is the tar writer shared
with the archive download and the reader of archives.

Errors: :class:`DumpError` is the base of everything reported without a traceback;
:class:`ArchiveError` (corrupt, truncated, tampered with, not a dump) and :class:`TargetNotEmptyError`
(restore without force into a non-empty database) derive from it.
"""

from flrepo.server.backup.dump import dump
from flrepo.server.backup.format import ArchiveError, DumpError, DumpReport, TargetNotEmptyError
from flrepo.server.backup.restore import restore

__all__ = ["ArchiveError", "DumpError", "DumpReport", "TargetNotEmptyError", "dump", "restore"]
