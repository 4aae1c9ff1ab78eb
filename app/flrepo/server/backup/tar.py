"""Tar as async chunks: the one tar writer of the archive download and the dump, and the dump's reader.

`tarfile.addfile` wants a synchronous file object to pull a member's bytes from; framing the members
ourselves lets the bytes come straight from an async GridFS reader and go straight to an HTTP response
(`tar_stream`, `tar_length`) or to a file (`TarFileWriter`). A member is a PAX header, exactly `size`
bytes of data, zeros up to a whole block; the archive ends with two zero blocks and zeros up to a whole
record, as tar itself writes. `TarReader` reads an archive back front to back, in a worker thread.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import tarfile
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, TypeVar

from flrepo.server.backup.format import ArchiveError

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
# Reads from an archive; GridFS re-chunks whatever it is given, so this only bounds memory per step.
READ_BYTES = 1024 * 1024


class TarMember(Protocol):
    """What the header of a member is made of (the archive download's entries are TarMembers too)."""

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime(self) -> float: ...


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    mtime: float = 0.0


M = TypeVar("M", bound=TarMember)


def header(member: TarMember) -> bytes:
    info = tarfile.TarInfo(member.name)
    info.size = member.size
    info.mtime = int(member.mtime)
    info.mode = 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8")


def padding(size: int) -> bytes:
    """The zeros after `size` bytes of data, up to a whole block."""
    return tarfile.NUL * (-size % BLOCK)


def end_of_archive(offset: int) -> bytes:
    """The trailer of an archive whose members took `offset` bytes: two zero blocks, then a whole record."""
    return tarfile.NUL * (2 * BLOCK + (-(offset + 2 * BLOCK) % RECORD))


def member_length(member: TarMember) -> int:
    return len(header(member)) + member.size + len(padding(member.size))


def tar_length(members: Iterable[TarMember]) -> int:
    """The exact length of the archive `tar_stream` writes for `members`."""
    offset = sum(member_length(m) for m in members)
    return offset + len(end_of_archive(offset))


async def member_stream(member: TarMember, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """One member: its header, the bytes of `chunks` (exactly `member.size` of them, else OSError), padding."""
    yield header(member)
    written = 0
    async for chunk in chunks:
        written += len(chunk)
        if written > member.size:
            raise OSError(f"{member.name}: more than the announced {member.size} bytes")
        yield chunk
    if written != member.size:
        raise OSError(f"{member.name}: {written} bytes instead of {member.size}")
    if pad := padding(member.size):  # no empty chunk: nothing to send or write
        yield pad


async def tar_stream(
    members: Iterable[M] | AsyncIterable[M], chunks: Callable[[M], AsyncIterator[bytes]]
) -> AsyncIterator[bytes]:
    """A whole archive: every member with the bytes `chunks(member)` yields, then the trailer.
    `members` may be an async iterable, so members can be written as a database query yields them."""
    offset = 0
    async for member in _members(members):
        async for block in member_stream(member, chunks(member)):
            offset += len(block)
            yield block
    yield end_of_archive(offset)


async def _members(members: Iterable[M] | AsyncIterable[M]) -> AsyncIterator[M]:
    if isinstance(members, AsyncIterable):
        async for member in members:
            yield member
    else:
        for member in members:
            yield member


class TarFileWriter:
    """A tar file, plain or gzip, written member by member from async chunks; disk writes run in worker
    threads."""

    def __init__(self, path: Path, *, compress: bool) -> None:
        self.path = path
        self.compress = compress
        self._raw: IO[bytes] | None = None
        self._out: IO[bytes] | gzip.GzipFile | None = None
        self._offset = 0

    async def open(self) -> None:
        self._raw = await asyncio.to_thread(open, self.path, "wb")
        if self.compress:
            # mtime=0: the same content gives the same bytes.
            self._out = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6, mtime=0)
        else:
            self._out = self._raw

    async def _write(self, data: bytes) -> None:
        assert self._out is not None
        await asyncio.to_thread(self._out.write, data)
        self._offset += len(data)

    async def add(self, name: str, size: int, mtime: float, chunks: AsyncIterator[bytes]) -> str:
        """Write one member of exactly `size` bytes from `chunks` (else OSError); return its sha256."""
        digest = hashlib.sha256()

        async def hashed() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                digest.update(chunk)
                yield chunk

        async for block in member_stream(Member(name, size, mtime), hashed()):
            await self._write(block)
        return digest.hexdigest()

    async def add_bytes(self, name: str, data: bytes, mtime: float) -> str:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.add(name, len(data), mtime, one())

    async def finish(self) -> None:
        await self._write(end_of_archive(self._offset))
        await self.close()

    async def close(self) -> None:
        def _close() -> None:
            if self._out is not None and self._out is not self._raw:
                self._out.close()
            if self._raw is not None:
                self._raw.flush()
                os.fsync(self._raw.fileno())
                self._raw.close()

        await asyncio.to_thread(_close)
        self._out = self._raw = None


class TarReader:
    """Sequential (streaming) reading of an archive, plain or gzip; members in archive order.

    gzip is undone by the gzip module rather than tarfile's own stream, because only the former
    checks the gzip trailer (CRC-32 and length): an archive cut off after its last member must
    still be refused, see `finish`.
    """

    _DECODE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._raw: IO[bytes] | None = None
        self._src: IO[bytes] | gzip.GzipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._members: Iterator[tarfile.TarInfo] | None = None

    def open(self) -> None:
        try:
            self._raw = open(self.path, "rb")
            gzipped = self._raw.read(2) == b"\x1f\x8b"
            self._raw.seek(0)
            self._src = gzip.GzipFile(fileobj=self._raw, mode="rb") if gzipped else self._raw
            # "r|": a stream, read once front to back, never seeking back.
            self._tar = tarfile.open(fileobj=self._src, mode="r|")
        except self._DECODE_ERRORS as exc:
            self.close()
            raise ArchiveError(f"{self.path}: not a readable tar archive ({exc})") from exc
        self._members = iter(self._tar)

    def next_member(self) -> tuple[tarfile.TarInfo, IO[bytes]] | None:
        assert self._tar is not None and self._members is not None
        try:
            member = next(self._members, None)
        except self._DECODE_ERRORS as exc:
            raise ArchiveError(f"{self.path}: corrupt or truncated archive ({exc})") from exc
        if member is None:
            return None
        if not member.isfile():
            raise ArchiveError(f"{self.path}: unexpected member {member.name!r} (not a regular file)")
        reader = self._tar.extractfile(member)
        assert reader is not None  # regular files always have a reader
        return member, reader

    def read(self, reader: IO[bytes], size: int = READ_BYTES) -> bytes:
        try:
            return reader.read(size)
        except self._DECODE_ERRORS as exc:
            raise ArchiveError(f"{self.path}: corrupt or truncated archive ({exc})") from exc

    def finish(self) -> None:
        """Read past the end-of-archive marker to the end of the file: a gzip trailer is checked there."""
        assert self._src is not None
        try:
            while self._src.read(READ_BYTES):
                pass
        except self._DECODE_ERRORS as exc:
            raise ArchiveError(f"{self.path}: corrupt or truncated archive ({exc})") from exc

    def close(self) -> None:
        for handle in (self._tar, self._src, self._raw):
            if handle is not None:
                handle.close()
        self._tar = self._src = self._raw = None
