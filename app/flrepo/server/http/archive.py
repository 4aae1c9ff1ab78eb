"""One streamed archive of many stored files: ZIP (stored, ZIP64 when needed), tar or tar.gz.

ZIP entries are written uncompressed with the CRC-32 recorded at upload, so headers are known up
front, the archive's exact length can be announced, and no file is ever buffered.
"""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Response
from fastapi.responses import StreamingResponse

from flrepo.server.backup.tar import tar_length, tar_stream
from flrepo.server.http.downloads import content_disposition
from flrepo.server.storage import blobs
from flrepo.server.storage.db import Database

_U32 = 0xFFFFFFFF


@dataclass
class Entry:
    name: str
    file_id: Any
    size: int
    crc32: int | None
    mtime: float


def entries_for(docs: list[dict[str, Any]]) -> list[Entry]:
    out = []
    for doc in docs:
        uploaded = doc.get("uploaded_at")
        out.append(
            Entry(
                name=f"{doc['model_name']}/{doc['model_version']}/{doc.get('filename') or 'model.bin'}",
                file_id=doc["model_id"],
                size=int(doc.get("size") or 0),
                crc32=doc.get("crc32"),
                mtime=uploaded.timestamp() if uploaded else time.time(),
            )
        )
    return out


async def _chunks(db: Database, entry: Entry) -> AsyncIterator[bytes]:
    file_doc = await blobs.open_file(db, entry.file_id)
    if file_doc is None:
        raise OSError(f"{entry.name}: file disappeared while the archive was being written")
    if file_doc["length"] != entry.size:
        raise OSError(f"{entry.name}: file changed while the archive was being written")
    async for chunk in blobs.read_range(db, file_doc, 0, entry.size):
        yield chunk


async def _fill_missing_crc(db: Database, entries: list[Entry]) -> None:
    # Files stored before CRC-32 was recorded (e.g. restored from aerOS) need one pass to get it.
    for entry in entries:
        if entry.crc32 is None:
            crc = 0
            async for chunk in _chunks(db, entry):
                crc = zlib.crc32(chunk, crc)
            entry.crc32 = crc


def _dos_time(ts: float) -> tuple[int, int]:
    t = time.gmtime(max(ts, 315532800))  # ZIP cannot express dates before 1980
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((t.tm_year - 1980) << 9) | (
        t.tm_mon << 5
    ) | t.tm_mday


def _zip_layout(entries: list[Entry]) -> tuple[list[bytes], bytes]:
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


async def _zip_stream(db: Database, entries: list[Entry], headers: list[bytes], tail: bytes) -> AsyncIterator[bytes]:
    for entry, header in zip(entries, headers, strict=True):
        yield header
        async for chunk in _chunks(db, entry):
            yield chunk
    yield tail


def _tar(db: Database, entries: list[Entry]) -> AsyncIterator[bytes]:
    return tar_stream(entries, lambda entry: _chunks(db, entry))


async def _gzip(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    async for chunk in stream:
        # Compression is CPU work: keep it off the event loop.
        out = await asyncio.to_thread(compressor.compress, chunk)
        if out:
            yield out
    yield compressor.flush()


async def archive_response(db: Database, filename: str, docs: list[dict[str, Any]]) -> Response:
    entries = entries_for(docs)
    lower = filename.lower()
    headers = {"Content-Disposition": content_disposition(filename), "X-Content-Type-Options": "nosniff"}
    if lower.endswith(".tar.gz") or lower.endswith(".tgz"):
        return StreamingResponse(_gzip(_tar(db, entries)), media_type="application/gzip", headers=headers)
    if lower.endswith(".tar"):
        headers["Content-Length"] = str(tar_length(entries))
        return StreamingResponse(_tar(db, entries), media_type="application/x-tar", headers=headers)
    await _fill_missing_crc(db, entries)
    local_headers, tail = _zip_layout(entries)
    headers["Content-Length"] = str(sum(len(h) for h in local_headers) + sum(e.size for e in entries) + len(tail))
    return StreamingResponse(
        _zip_stream(db, entries, local_headers, tail), media_type="application/zip", headers=headers
    )
