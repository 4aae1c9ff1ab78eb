"""GridFS files written and read chunk by chunk, in the standard GridFS layout, with bounded memory.

PyMongo's GridIn batches up to 32 MiB of chunks before it inserts them, and GridOut's cursor
fetches up to ~25 MiB per batch; per request that is more memory than the service should hold.
These write and read the same `fs.files` / `fs.chunks` documents (any GridFS reader, including
`AsyncGridFSBucket`, sees the files), a few chunks per round trip.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from bson import Binary, Int64, ObjectId
from pymongo import ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase

# Chunks per insert_many and per cursor batch: ~1 MiB per round trip with 255 KiB chunks.
BATCH_CHUNKS = 4


def chunk_id(file_id: Any, n: int) -> str:
    """Chunks written here get the _id "<files_id>:<n>", so a retried insert of a chunk is a
    duplicate, never a second copy. GridFS readers find chunks by files_id and n only."""
    return f"{file_id}:{n}"


class _Chunker:
    """Cuts the bytes written into the chunks of one file, numbered from `n`, and sends them a batch
    at a time (`_send`: how a batch is stored). Memory: one chunk being filled plus one batch."""

    def __init__(self, grid: AsyncDatabase, file_id: Any, chunk_size: int, n: int = 0) -> None:
        self.file_id = file_id
        self._chunks = grid["fs.chunks"]
        self._chunk_size = chunk_size
        self._n = n
        self._buffer = bytearray()
        self._pending: list[dict[str, Any]] = []

    async def write(self, data: bytes) -> None:
        self._buffer += data
        size = self._chunk_size
        if len(self._buffer) < size:
            return
        whole = len(self._buffer) // size * size
        view = memoryview(self._buffer)
        for offset in range(0, whole, size):
            self._pending.append(self._chunk(bytes(view[offset : offset + size])))
        view.release()
        del self._buffer[:whole]
        if len(self._pending) >= BATCH_CHUNKS:
            await self._flush()

    def _chunk(self, data: bytes) -> dict[str, Any]:
        # "at": when the chunk was written, so the sweep can tell a dead upload from a slow one.
        doc = {
            "_id": chunk_id(self.file_id, self._n),
            "files_id": self.file_id,
            "n": self._n,
            "data": Binary(data),
            "at": datetime.now(UTC),
        }
        self._n += 1
        return doc

    async def _flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            await self._send(batch)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def _write_rest(self) -> None:
        """Write what is buffered, a last chunk shorter than the chunk size too."""
        if self._buffer:
            self._pending.append(self._chunk(bytes(self._buffer)))
            self._buffer.clear()
        await self._flush()


class GridWriter(_Chunker):
    """Writes one new GridFS file; the files document appears only in `close`, so an unfinished
    upload is never visible as a file (just chunks, which the sweep removes)."""

    def __init__(
        self,
        grid: AsyncDatabase,
        filename: str,
        chunk_size: int,
        metadata: dict[str, Any] | None,
        file_id: Any = None,
    ) -> None:
        super().__init__(grid, file_id if file_id is not None else ObjectId(), chunk_size)
        self._files = grid["fs.files"]
        self._filename = filename
        self._metadata = metadata
        self.length = 0

    async def write(self, data: bytes) -> None:
        self.length += len(data)
        await super().write(data)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        await self._chunks.insert_many(batch, ordered=True)

    async def close(self, **extra: Any) -> None:
        await self._write_rest()
        await self._files.insert_one(
            {
                "_id": self.file_id,
                "length": Int64(self.length),
                "chunkSize": self._chunk_size,
                "uploadDate": datetime.now(UTC),
                "filename": self._filename,
                "metadata": self._metadata,
                **extra,
            }
        )

    async def abort(self) -> None:
        self._pending.clear()
        await self._chunks.delete_many({"files_id": self.file_id})


class GridAppender(_Chunker):
    """Continues the chunks of a GridFS file being written across requests (a resumable upload):
    starts at `offset`, which need not be a chunk boundary, and leaves every chunk it touched written,
    including the partial last one, so the next request reads that one back and goes on.

    Chunks are written by `_id` with upsert: a chunk left by an interrupted request beyond the
    recorded offset is simply overwritten when the upload gets there again.
    """

    def __init__(self, grid: AsyncDatabase, file_id: Any, chunk_size: int, offset: int) -> None:
        super().__init__(grid, file_id, chunk_size, n=offset // chunk_size)
        self._tail = offset % chunk_size  # bytes of chunk _n already stored

    async def open(self) -> None:
        if not self._tail:
            return
        doc = await self._chunks.find_one({"files_id": self.file_id, "n": self._n}, {"_id": 0, "data": 1})
        data = bytes(doc["data"]) if doc is not None else b""
        if len(data) < self._tail:
            raise OSError(f"GridFS file {self.file_id} has {len(data)} bytes in chunk {self._n}, not {self._tail}")
        self._buffer += data[: self._tail]

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        await self._chunks.bulk_write([ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in batch])

    async def close(self) -> None:
        """Write what is buffered, the partial last chunk too (the next append rewrites it, longer)."""
        await self._write_rest()


async def write_files_document(
    grid: AsyncDatabase, file_id: Any, length: int, chunk_size: int, filename: str, **fields: Any
) -> None:
    """The files document that makes a complete set of chunks a GridFS file (replacing one written
    by an earlier attempt)."""
    await grid["fs.files"].replace_one(
        {"_id": file_id},
        {
            "_id": file_id,
            "length": Int64(length),
            "chunkSize": chunk_size,
            "uploadDate": datetime.now(UTC),
            "filename": filename,
            **fields,
        },
        upsert=True,
    )


async def find_file(grid: AsyncDatabase, file_id: Any) -> dict[str, Any] | None:
    return await grid["fs.files"].find_one({"_id": file_id})


async def read_range(
    grid: AsyncDatabase, file_doc: dict[str, Any], start: int, length: int, *, by_chunk: bool = False
) -> AsyncIterator[bytes]:
    """Yield `length` bytes of the file from `start`, fetching only the chunks that hold them.

    `by_chunk`: look each chunk up by its (files_id, n) key instead of one sorted range query, for a
    store that would sort the whole range in memory before sending a byte (FerretDB).
    """
    if length <= 0:
        return
    size = int(file_doc["chunkSize"])
    first, last = start // size, (start + length - 1) // size
    skip, remaining = start - first * size, length
    read = _chunks_by_key if by_chunk else _chunks
    async for data in read(grid, file_doc["_id"], first, last):
        if skip:
            data = data[skip:]
            skip = 0
        if len(data) > remaining:
            data = data[:remaining]
        remaining -= len(data)
        yield data
        if remaining == 0:
            return
    raise OSError(f"GridFS file {file_doc['_id']} ended {remaining} bytes early")


async def _chunks(grid: AsyncDatabase, file_id: Any, first: int, last: int) -> AsyncIterator[bytes]:
    # One query per read: MongoDB walks the (files_id, n) index and streams the batches.
    cursor = (
        grid["fs.chunks"]
        .find({"files_id": file_id, "n": {"$gte": first, "$lte": last}}, {"_id": 0, "n": 1, "data": 1})
        .sort([("n", 1)])
        .batch_size(BATCH_CHUNKS)
    )
    expected = first
    try:
        async for chunk in cursor:
            if chunk["n"] != expected:
                raise OSError(f"GridFS file {file_id} is missing chunk {expected}")
            expected += 1
            yield bytes(chunk["data"])
    finally:
        await cursor.close()


async def _chunks_by_key(grid: AsyncDatabase, file_id: Any, first: int, last: int) -> AsyncIterator[bytes]:
    """Chunks first..last in order, each by its (files_id, n) key, BATCH_CHUNKS look-ups in flight.

    Each look-up is served by the unique index with no sort, so the store holds one chunk per
    look-up: a 1 GiB download kept FerretDB at ~70 MiB instead of ~2.2 GiB (bench/RESULTS.md).
    """
    chunks = grid["fs.chunks"]

    def fetch(n: int) -> asyncio.Future[Any]:
        return asyncio.ensure_future(chunks.find_one({"files_id": file_id, "n": n}, {"_id": 0, "data": 1}))

    window = deque(fetch(n) for n in range(first, min(last, first + BATCH_CHUNKS - 1) + 1))
    following = first + len(window)
    try:
        for n in range(first, last + 1):
            doc = await window.popleft()
            if following <= last:
                window.append(fetch(following))
                following += 1
            if doc is None:
                raise OSError(f"GridFS file {file_id} is missing chunk {n}")
            yield bytes(doc["data"])
    finally:
        for pending in window:
            pending.cancel()
        # Let cancelled look-ups finish unwinding (and release their connections) before returning.
        await asyncio.gather(*window, return_exceptions=True)
