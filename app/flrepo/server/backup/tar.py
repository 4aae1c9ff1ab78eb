"""Tar, written as a stream of async chunks: the one tar writer of the archive download and the dump.

`tarfile.addfile` wants a synchronous file object to pull a member's bytes from; framing the members
ourselves lets the bytes come straight from an async GridFS reader and go straight to an HTTP response
or a file. A member is a PAX header, exactly `size` bytes of data, zeros up to a whole block; the
archive ends with two zero blocks and zeros up to a whole record, as tar itself writes.
"""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


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


async def tar_stream(members: Iterable[M], chunks: Callable[[M], AsyncIterator[bytes]]) -> AsyncIterator[bytes]:
    """A whole archive: every member with the bytes `chunks(member)` yields, then the trailer."""
    offset = 0
    for member in members:
        async for block in member_stream(member, chunks(member)):
            offset += len(block)
            yield block
    yield end_of_archive(offset)
