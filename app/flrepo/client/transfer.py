"""Streaming uploads and downloads, the parts both clients share (all plain, blocking file I/O:
the async client runs these in a worker thread).

Uploads read a path or file object in chunks and can be re-read for a retry. Downloads write to
`<dest>.part`, hash as they go, resume with `Range` + `If-Range` (an ETag sidecar remembers which
file the part belongs to), and only rename to `<dest>` once the sha256 equals the ETag.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from flrepo.client.calls import Stored, etag_sha256
from flrepo.client.errors import IntegrityError, RepositoryError, id_suffix
from flrepo.names import safe_filename

CHUNK = 1024 * 1024
# (bytes done, total bytes or None when unknown) after every chunk.
Progress = Callable[[int, int | None], None]
Source = str | os.PathLike[str] | BinaryIO
Dest = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class Digest:
    sha256: str
    size: int


class Upload:
    """A file to send: a path (re-opened per attempt) or a file object (re-wound when seekable).
    `sent` is the sha256 and size of the bytes the last complete read produced."""

    def __init__(self, source: Source, filename: str | None = None, progress: Progress | None = None) -> None:
        self.source = source
        self.progress = progress
        self.sent: Digest | None = None
        if isinstance(source, str | os.PathLike):
            self.path: Path | None = Path(source)
            self.size: int | None = self.path.stat().st_size
            self.filename = filename or self.path.name
            self.start = 0
        else:
            self.path = None
            name = getattr(source, "name", None)  # an int for os.fdopen'ed descriptors and pipes
            self.filename = filename or (Path(name).name if isinstance(name, str) and name else "upload.bin")
            self.start = source.tell() if source.seekable() else 0
            self.size = _remaining(source)

    @property
    def repeatable(self) -> bool:
        return self.path is not None or self.source.seekable()  # type: ignore[union-attr]

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/octet-stream", "X-Filename": self.filename}
        if self.size is not None:
            headers["Content-Length"] = str(self.size)
        return headers

    def chunks(self) -> Iterator[bytes]:
        """The bytes, from the start, in CHUNK pieces (one open file per call)."""
        if self.path is not None:
            with self.path.open("rb") as handle:
                yield from self._read(handle)
        else:
            source = self.source
            assert not isinstance(source, str | os.PathLike)
            if source.seekable():
                source.seek(self.start)
            yield from self._read(source)

    def _read(self, handle: BinaryIO) -> Iterator[bytes]:
        done = 0
        sha = hashlib.sha256()
        self.sent = None
        while chunk := handle.read(CHUNK):
            done += len(chunk)
            sha.update(chunk)
            yield chunk
            if self.progress:
                self.progress(done, self.size)
        self.sent = Digest(sha.hexdigest(), done)

    def digest(self) -> Digest:
        """sha256 and size, read once before the upload (to sign without holding the file)."""
        for _ in self.chunks():
            pass
        assert self.sent is not None
        return self.sent

    def stored(self, response: httpx.Response) -> Stored | None:
        """What the server stored, from the ETag of its answer to the upload (None without one);
        IntegrityError when that is not the sha256 of the bytes sent."""
        sha256 = etag_sha256(response)
        if sha256 is None or self.sent is None:
            return None
        if sha256 != self.sent.sha256:
            request_id = response.headers.get("x-request-id")
            raise IntegrityError(
                f"the server stored sha256 {sha256}, not the {self.sent.sha256} sent{id_suffix(request_id)}",
                request_id=request_id,
            )
        return Stored(self.sent.size, sha256)

    def stored_locally(self) -> Stored:
        """The bytes sent, when the server can tell nothing more (no ETag, no HEAD for the path)."""
        assert self.sent is not None, "nothing was sent"
        return Stored(self.sent.size, self.sent.sha256)


def _remaining(handle: BinaryIO) -> int | None:
    """Bytes left from the current position, or None for a pipe (sent chunked, size unknown)."""
    if not handle.seekable():
        return None
    here = handle.tell()
    end = handle.seek(0, os.SEEK_END)
    handle.seek(here)
    return end - here


def is_folder(dest: Dest) -> bool:
    return isinstance(dest, str | os.PathLike) and Path(dest).is_dir()


def in_folder(folder: Dest, stored_name: object, fallback: str) -> Path:
    """The file in `folder` named by the safe base name of `stored_name` (a name the server sent:
    it may be `../../x`, `/etc/x` or anything else), else of `fallback`; never a path outside `folder`."""
    if not isinstance(folder, str | os.PathLike):
        raise TypeError("a folder is a path")
    base = Path(folder)
    target = base / safe_filename(stored_name, safe_filename(fallback))
    if target.resolve().parent != base.resolve():  # safe_filename makes this impossible; kept as a guard
        raise RepositoryError(f"refusing to write {target}: outside {base}")
    return target


@dataclass(frozen=True)
class Downloaded:
    """What a finished download wrote: where (None for a file object), how much, its sha256."""

    path: Path | None
    size: int
    sha256: str


class Download:
    """One download's destination and state; kept across retries so a dropped connection resumes."""

    def __init__(self, dest: Dest, progress: Progress | None = None, resume: bool = True) -> None:
        self.progress = progress
        self.resume = resume
        self.etag: str | None = None
        self.request_id: str | None = None  # of the response being written, for errors
        self.total: int | None = None
        self.offset = 0
        self.sha = hashlib.sha256()
        self.hashed = 0  # bytes of the file that `sha` has seen
        self.finished = False
        if isinstance(dest, str | os.PathLike):
            self.path: Path | None = Path(dest)
            if self.path.is_dir():
                # Its `.part` would land beside it, outside the folder: the item downloads take folders.
                raise IsADirectoryError(f"{dest} is a folder: give a file name (download_model & co. take folders)")
            self.part = self.path.with_name(self.path.name + ".part")
            self.tag = self.path.with_name(self.path.name + ".part.etag")
            self.handle: BinaryIO | None = None
            self.base = 0
            if resume and self.part.exists() and self.tag.exists():
                self.etag = self.tag.read_text().strip() or None
                self.offset = self.part.stat().st_size
        else:
            self.path = None
            self.handle = dest
            self.base = dest.tell() if dest.seekable() else 0

    def request_headers(self) -> dict[str, str]:
        """Range + If-Range when part of this very file is already here."""
        if self.offset and self.etag:
            return {"Range": f"bytes={self.offset}-", "If-Range": self.etag}
        return {}

    def begin(self, response: httpx.Response) -> None:
        """Take the response's headers: continue after a 206, start over after a 200."""
        etag = response.headers.get("etag")
        self.request_id = response.headers.get("x-request-id")
        if response.status_code == 206 and self.offset:
            first, _, total = response.headers.get("content-range", "").removeprefix("bytes ").partition("/")
            if not first.startswith(f"{self.offset}-") or etag != self.etag:
                raise RepositoryError(f"unexpected Content-Range {response.headers.get('content-range')!r}")
            self.total = int(total) if total.isdigit() else None
            if self.hashed != self.offset:
                self._rehash_part()
            if self.handle is None:
                self.handle = self.part.open("ab")
        else:
            self._restart()
            length = response.headers.get("content-length")
            self.total = int(length) if length and length.isdigit() else None
        self.etag = etag
        if self.path is not None and etag:
            self.tag.write_text(etag)

    def _rehash_part(self) -> None:
        # A part left by an earlier run: its bytes count towards the sha256 of the whole file.
        self.sha = hashlib.sha256()
        self.hashed = 0
        with self.part.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                self.sha.update(chunk)
                self.hashed += len(chunk)

    def unsatisfiable(self) -> None:
        """A 416 to our Range: the part is not a prefix of this file; drop it and start over."""
        self.discard()
        self.offset = 0
        self.etag = None

    def _restart(self) -> None:
        written, self.offset = self.offset, 0
        self.sha = hashlib.sha256()
        self.hashed = 0
        if self.path is not None:
            if self.handle is not None:
                self.handle.close()
            self.part.parent.mkdir(parents=True, exist_ok=True)
            self.handle = self.part.open("wb")
        elif self.handle is not None and self.handle.seekable():
            self.handle.seek(self.base)
            self.handle.truncate()
        elif written:  # a pipe: what went out cannot be taken back
            raise RepositoryError("the file changed on the server and the destination cannot be rewound")

    def write(self, chunk: bytes) -> None:
        assert self.handle is not None
        self.handle.write(chunk)
        self.sha.update(chunk)
        self.offset += len(chunk)
        self.hashed += len(chunk)
        if self.progress:
            self.progress(self.offset, self.total)

    def finish(self) -> Downloaded:
        """Check the sha256 against the ETag; rename the part into place, or remove it and raise."""
        sha = self.sha.hexdigest()
        expected = (self.etag or "").strip('"')
        short = self.total is not None and self.offset != self.total
        if short or (expected and expected != sha):
            self.discard()
            why = f"{self.offset} of {self.total} bytes" if short else f"sha256 {sha}, ETag {expected}"
            raise IntegrityError(
                f"download does not match what the server announced ({why}); removed{id_suffix(self.request_id)}",
                request_id=self.request_id,
            )
        self.finished = True
        if self.path is None:
            return Downloaded(None, self.offset, sha)
        assert self.handle is not None
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        self.handle = None
        os.replace(self.part, self.path)
        self.tag.unlink(missing_ok=True)
        return Downloaded(self.path, self.offset, sha)

    def pause(self) -> None:
        """Between two attempts of one call: close the part, keep it and the state to resume from."""
        if self.path is not None and self.handle is not None:
            self.handle.close()
            self.handle = None

    def suspend(self) -> None:
        """The call ends: keep an unfinished part for a later call only when resuming is wanted."""
        self.pause()
        if self.path is not None and not self.finished and not self.resume:
            self.discard()

    def discard(self) -> None:
        """Remove every trace of a download that cannot be trusted."""
        if self.path is not None:
            if self.handle is not None:
                self.handle.close()
                self.handle = None
            self.part.unlink(missing_ok=True)
            self.tag.unlink(missing_ok=True)
        elif self.handle is not None and self.handle.seekable():
            self.handle.seek(self.base)
            self.handle.truncate()
