"""One streamed archive of many stored files: ZIP (stored, ZIP64 when needed), tar or tar.gz.

ZIP entries are written uncompressed with the CRC-32 recorded at upload, so headers are known up
front, the archive's exact length can be announced, and no file is ever buffered.
"""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable

from fastapi import Response
from fastapi.responses import StreamingResponse

from flrepo.server.backup.tar import tar_length, tar_stream
from flrepo.server.http.downloads import content_disposition
from flrepo.server.repository.models import ArchiveEntry

_U32 = 0xFFFFFFFF


Reader = Callable[[ArchiveEntry], AsyncIterator[bytes]]


async def _fill_missing_crc(entries: list[ArchiveEntry], read: Reader) -> None:
    # Files stored before CRC-32 was recorded (e.g. restored from aerOS) need one pass to get it.
    for entry in entries:
        if entry.crc32 is None:
            crc = 0
            async for chunk in read(entry):
                crc = zlib.crc32(chunk, crc)
            entry.crc32 = crc


def _dos_time(ts: float) -> tuple[int, int]:
    t = time.gmtime(max(ts, 315532800))  # ZIP cannot express dates before 1980
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((t.tm_year - 1980) << 9) | (
        t.tm_mon << 5
    ) | t.tm_mday


def _zip_layout(entries: list[ArchiveEntry]) -> tuple[list[bytes], bytes]:
    """Local headers of every entry and the trailing central directory + end records."""
    locals_: list[bytes] = []
    central = bytearray()
    offset = 0
    for e in entries:
        name = e.name.encode("utf-8")
        dtime, ddate = _dos_time(e.mtime)
        crc = e.crc32 or 0
        big = e.size >= _U32
        local_extra = struct.pack("<HHQQ", 1, 16, e.size, e.size) if big else b""
        version = 45 if big or offset >= _U32 else 20
        size32 = _U32 if big else e.size
        local = (
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                version,
                0x0800,
                0,
                dtime,
                ddate,
                crc,
                size32,
                size32,
                len(name),
                len(local_extra),
            )
            + name
            + local_extra
        )
        locals_.append(local)
        cextra_fields = b""
        if big:
            cextra_fields += struct.pack("<QQ", e.size, e.size)
        if offset >= _U32:
            cextra_fields += struct.pack("<Q", offset)
        cextra = struct.pack("<HH", 1, len(cextra_fields)) + cextra_fields if cextra_fields else b""
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                (3 << 8) | version,
                version,
                0x0800,
                0,
                dtime,
                ddate,
                crc,
                size32,
                size32,
                len(name),
                len(cextra),
                0,
                0,
                0,
                0o100644 << 16,
                min(offset, _U32),
            )
            + name
            + cextra
        )
        offset += len(local) + e.size
    cd_offset, cd_size, count = offset, len(central), len(entries)
    tail = bytes(central)
    if count >= 0xFFFF or cd_offset >= _U32 or cd_size >= _U32:
        zip64_end = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
        locator = struct.pack("<IIQI", 0x07064B50, 0, cd_offset + cd_size, 1)
        tail += zip64_end + locator
        tail += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, _U32, _U32, 0)
    else:
        tail += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, cd_offset, 0)
    return locals_, tail


async def _zip_stream(
    entries: list[ArchiveEntry], read: Reader, headers: list[bytes], tail: bytes
) -> AsyncIterator[bytes]:
    for entry, header in zip(entries, headers, strict=True):
        yield header
        async for chunk in read(entry):
            yield chunk
    yield tail


async def _gzip(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    async for chunk in stream:
        # Compression is CPU work: keep it off the event loop.
        out = await asyncio.to_thread(compressor.compress, chunk)
        if out:
            yield out
    yield compressor.flush()


async def archive_response(filename: str, entries: Callable[[], AsyncIterator[ArchiveEntry]], read: Reader) -> Response:
    """The entries `entries()` yields as one streamed archive, its format chosen by `filename` (.zip,
    .tar, .tar.gz/.tgz). A .tar.gz is written as the entries arrive; .zip and .tar announce their exact
    length, so they list their (small) entries first."""
    lower = filename.lower()
    headers = {"Content-Disposition": content_disposition(filename), "X-Content-Type-Options": "nosniff"}
    if lower.endswith(".tar.gz") or lower.endswith(".tgz"):
        # The first batch is read before answering, so an unavailable database is still a 503.
        stream = await _started(entries())
        return StreamingResponse(_gzip(tar_stream(stream, read)), media_type="application/gzip", headers=headers)
    listed = [entry async for entry in entries()]
    return await _sized_archive(lower, headers, listed, read)


async def _started(entries: AsyncIterator[ArchiveEntry]) -> AsyncIterator[ArchiveEntry]:
    """`entries` with its first item already fetched (the query has run)."""
    first = await anext(entries, None)

    async def chained() -> AsyncIterator[ArchiveEntry]:
        if first is None:
            return
        yield first
        async for entry in entries:
            yield entry

    return chained()


async def _sized_archive(lower: str, headers: dict[str, str], entries: list[ArchiveEntry], read: Reader) -> Response:
    if lower.endswith(".tar"):
        headers["Content-Length"] = str(tar_length(entries))
        return StreamingResponse(tar_stream(entries, read), media_type="application/x-tar", headers=headers)
    await _fill_missing_crc(entries, read)
    local_headers, tail = _zip_layout(entries)
    headers["Content-Length"] = str(sum(len(h) for h in local_headers) + sum(e.size for e in entries) + len(tail))
    return StreamingResponse(
        _zip_stream(entries, read, local_headers, tail), media_type="application/zip", headers=headers
    )
