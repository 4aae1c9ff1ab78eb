"""GridFS files written and read chunk by chunk, in the standard GridFS layout, with bounded memory.

PyMongo's GridIn batches up to 32 MiB of chunks before it inserts them, and GridOut's cursor
fetches up to ~25 MiB per batch; per request that is more memory than the service should hold.
These write and read the same `fs.files` / `fs.chunks` documents (any GridFS reader, including
`AsyncGridFSBucket`, sees the files), a few chunks per round trip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bson import Binary, Int64, ObjectId
from pymongo import ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from flrepo.server.storage.dialect import ChunkReads

log = logging.getLogger(__name__)
T = TypeVar("T")

# Chunks per cursor batch: ~1 MiB per round trip with 255 KiB chunks.
BATCH_CHUNKS = 4
# Chunks per insert_many: ~4 MiB per write. Each insert costs the store a transaction and a pass of its
# own (FerretDB: ~25% more CPU per stored byte at 4 chunks than at 16; PyMongo's GridIn sends up to
# 48 MB at once), while one batch stored and the next filling keep the service's memory at ~8 MiB.
WRITE_BATCH_CHUNKS = 16


def chunk_id(file_id: Any, n: int) -> str:
    """Chunks written here get the _id "<files_id>:<n>", so a retried insert of a chunk is a
    duplicate, never a second copy. GridFS readers find chunks by files_id and n only."""
    return f"{file_id}:{n}"


class _Chunker:
    """Cuts the bytes written into the chunks of one file, numbered from `n`, and sends them a batch
    at a time (`_send`: how a batch is stored). With `overlap`, one batch is stored while the next one
    fills, so the body keeps arriving during a round trip. Memory: one chunk being filled plus one batch
    (two with `overlap`)."""

    overlap = False

    def __init__(
        self, grid: AsyncDatabase, file_id: Any, chunk_size: int, n: int = 0, guard: ReadGuard | None = None
    ) -> None:
        self.file_id = file_id
        self._chunks = grid["fs.chunks"]
        self._chunk_size = chunk_size
        self._n = n
        self._buffer = bytearray()
        self._pending: list[dict[str, Any]] = []
        self._sending: asyncio.Future[None] | None = None
        # With a guard, `grid` is a client without the per-reply bound: a slow store is waited for while it
        # answers pings, a failed write retried within the guard's budget (ReadGuard.run).
        self._guard = guard

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
        if len(self._pending) >= WRITE_BATCH_CHUNKS:
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
            await self._drain()  # batches are stored one after the other, in order
            if not self.overlap:
                await self._store(batch)
                return
            self._sending = asyncio.ensure_future(self._store(batch))

    async def _store(self, batch: list[dict[str, Any]]) -> None:
        if self._guard is None:
            await self._send(batch)
            return
        what = f"writing GridFS file {self.file_id}, chunks {batch[0]['n']}-{batch[-1]['n']}"
        # A retry rewrites the batch by _id: chunks an interrupted attempt stored are replaced, never doubled.
        await self._guard.run(lambda attempt: self._send(batch) if attempt == 0 else _upsert(self._chunks, batch), what)

    async def _drain(self) -> None:
        """Wait until the batch being stored is stored (raising what storing it raised)."""
        if self._sending is not None:
            sending, self._sending = self._sending, None
            await sending

    async def _settle(self) -> None:
        """Let the batch in flight finish, whatever its outcome (before removing what was stored: a
        cancelled insert might still land after the removal)."""
        if self._sending is not None:
            sending, self._sending = self._sending, None
            await asyncio.gather(sending, return_exceptions=True)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def _write_rest(self) -> None:
        """Write what is buffered, a last chunk shorter than the chunk size too."""
        if self._buffer:
            self._pending.append(self._chunk(bytes(self._buffer)))
            self._buffer.clear()
        await self._flush()
        await self._drain()


async def _upsert(chunks: AsyncCollection, batch: list[dict[str, Any]]) -> None:
    await chunks.bulk_write([ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in batch])


class GridWriter(_Chunker):
    """Writes one new GridFS file; the files document appears only in `close`, so an unfinished
    upload is never visible as a file (just chunks, which the sweep removes)."""

    # A failed upload is removed whole (abort), so a batch may be in flight when the body fails.
    overlap = True

    def __init__(
        self,
        grid: AsyncDatabase,
        filename: str,
        chunk_size: int,
        metadata: dict[str, Any] | None,
        file_id: Any = None,
        guard: ReadGuard | None = None,
    ) -> None:
        super().__init__(grid, file_id if file_id is not None else ObjectId(), chunk_size, guard=guard)
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
        doc = {
            "_id": self.file_id,
            "length": Int64(self.length),
            "chunkSize": self._chunk_size,
            "uploadDate": datetime.now(UTC),
            "filename": self._filename,
            "metadata": self._metadata,
            **extra,
        }
        if self._guard is None:
            await self._files.insert_one(doc)
            return
        await self._guard.run(
            lambda attempt: (
                self._files.insert_one(doc)
                if attempt == 0
                else self._files.replace_one({"_id": self.file_id}, doc, upsert=True)
            ),
            f"writing the files document of GridFS file {self.file_id}",
        )

    async def abort(self) -> None:
        self._pending.clear()
        await self._settle()
        removal = self._chunks.delete_many({"files_id": self.file_id})
        if self._guard is None:
            await removal
            return
        # `grid` has no per-reply bound: a dead store must not hold the failed request (the sweep removes
        # what stays behind).
        await asyncio.wait_for(removal, self._guard.reply_s)


class GridAppender(_Chunker):
    """Continues the chunks of a GridFS file being written across requests (a resumable upload):
    starts at `offset`, which need not be a chunk boundary, and leaves every chunk it touched written,
    including the partial last one, so the next request reads that one back and goes on.

    Chunks are written by `_id` with upsert: a chunk left by an interrupted request beyond the
    recorded offset is simply overwritten when the upload gets there again.
    """

    def __init__(
        self, grid: AsyncDatabase, file_id: Any, chunk_size: int, offset: int, guard: ReadGuard | None = None
    ) -> None:
        super().__init__(grid, file_id, chunk_size, n=offset // chunk_size, guard=guard)
        self._tail = offset % chunk_size  # bytes of chunk _n already stored

    async def open(self) -> None:
        if not self._tail:
            return
        query = {"files_id": self.file_id, "n": self._n}
        if self._guard is None:
            doc = await self._chunks.find_one(query, {"_id": 0, "data": 1})
        else:
            doc = await self._guard.run(
                lambda _: self._chunks.find_one(query, {"_id": 0, "data": 1}),
                f"reading the last chunk of GridFS file {self.file_id}",
            )
        data = bytes(doc["data"]) if doc is not None else b""
        if len(data) < self._tail:
            raise OSError(f"GridFS file {self.file_id} has {len(data)} bytes in chunk {self._n}, not {self._tail}")
        self._buffer += data[: self._tail]

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        await _upsert(self._chunks, batch)

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


@dataclass(frozen=True)
class ReadGuard:
    """How long a file read or write waits for the store, so that a slow store is waited for and a dead
    one is not.

    `reply_s`: after this long without a reply, ask the store whether it is alive (`alive`, bounded by
    the per-operation timeout); while it answers, keep waiting. `retry_s`: a read that fails (a driver
    error, or the store no longer answering) is retried from the next chunk needed for this long after
    the last chunk arrived, then given up (StoreUnavailable); a write of a batch of chunks likewise,
    from the batch.
    """

    reply_s: float
    retry_s: float
    alive: Callable[[], Awaitable[bool]]
    # However alive the store says it is, a read that delivers nothing for this long is given up.
    slow_s: float = 600.0

    async def wait(self, step: Awaitable[T], since: float, what: str, first_check: float | None = None) -> T:
        """`step`'s result, waited for while the store answers pings (TimeoutError once it does not, or
        after slow_s without progress since `since`); `step` is cancelled if given up. The first ping goes
        after `first_check` seconds (default reply_s), then every reply_s."""
        task = asyncio.ensure_future(step)
        timeout = self.reply_s if first_check is None else first_check
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=timeout)
                timeout = self.reply_s
                if done:
                    return task.result()
                slow = time.monotonic() - since
                if slow >= self.slow_s:
                    raise TimeoutError(f"no reply for {slow:.0f} s although the store answers")
                if not await self.alive():
                    raise TimeoutError(f"no reply for {self.reply_s:g} s and the store does not answer a ping")
                log.info("%s: the store is slow (%.1f s), still waiting", what, slow)
        finally:
            if not task.done():
                task.cancel()
            # Retrieves what a step that ended meanwhile raised (or lets a cancelled one unwind).
            await asyncio.gather(task, return_exceptions=True)

    async def run(self, attempt: Callable[[int], Awaitable[T]], what: str) -> T:
        """`attempt(0)`, then `attempt(1)`, ... after each failure, for up to retry_s after the first
        began; each waited for as `wait` does. StoreUnavailable once the budget is spent."""
        started, failures = time.monotonic(), 0
        while True:
            try:
                return await self.wait(attempt(failures), started, what)
            except (PyMongoError, TimeoutError) as exc:
                failures += 1
                waited = time.monotonic() - started
                if waited >= self.retry_s:
                    log.error("%s: given up after %.1f s without progress: %s", what, waited, exc)
                    raise StoreUnavailable(f"{what}: the store did not answer: {exc}") from exc
                pause = min(0.25 * 2 ** (failures - 1), self.reply_s)
                log.warning(
                    "%s failed (%s: %s); retrying in %.2f s (%.1f s without progress)",
                    what,
                    type(exc).__name__,
                    exc,
                    pause,
                    waited,
                )
                await asyncio.sleep(pause)


class StoreUnavailable(PyMongoError):
    """A file read or write found the store dead or stuck for longer than its guard allows."""

    @property
    def timeout(self) -> bool:
        # The store did not answer in time: the request gets a 503 (server.errors), not a 500.
        return True


async def read_range(
    grid: AsyncDatabase,
    file_doc: dict[str, Any],
    start: int,
    length: int,
    *,
    reads: ChunkReads = ChunkReads.RANGE,
    key_batch: int = 1,
    guard: ReadGuard | None = None,
) -> AsyncIterator[bytes]:
    """Yield `length` bytes of the file from `start`, fetching only the chunks that hold them, in the
    way `reads` says this store serves fast (dialect.ChunkReads), with bounded memory."""
    if length <= 0:
        return
    size = int(file_doc["chunkSize"])
    first, last = start // size, (start + length - 1) // size
    skip, remaining = start - first * size, length
    source = _Chunks(grid, file_doc["_id"], reads, key_batch, guard)
    parts: list[bytes] = []
    held = 0
    async for data in source.read(first, last):
        if skip:
            data = data[skip:]
            skip = 0
        if len(data) > remaining:
            data = data[:remaining]
        remaining -= len(data)
        parts.append(data)
        held += len(data)
        # Chunks that arrived together leave together: one socket write (and one wake-up of the reader)
        # per ~PIECE instead of per 255 KiB chunk.
        if held >= PIECE or remaining == 0:
            yield parts[0] if len(parts) == 1 else b"".join(parts)
            parts, held = [], 0
        if remaining == 0:
            return
    if parts:
        yield b"".join(parts)
    raise OSError(f"GridFS file {file_doc['_id']} ended {remaining} bytes early")


# Bytes handed on at a time by read_range (at most one chunk more).
PIECE = 1024 * 1024


# Chunks that arrive ahead of the one needed next and are kept for later: ~4 MiB with 255 KiB chunks.
AHEAD = 16


class _Chunks:
    """The chunks first..last of one file, in order.

    Each pass asks the store for the chunks from the next one needed; whatever order they come in, the
    next one is yielded and up to AHEAD that follow it are kept, the rest dropped (a later pass reads them
    again). A pass that brings not one needed chunk means the chunk is missing. A pass that fails is
    retried from where it stopped, within the guard's budget.
    """

    def __init__(
        self, grid: AsyncDatabase, file_id: Any, reads: ChunkReads, key_batch: int, guard: ReadGuard | None
    ) -> None:
        self._chunks = grid["fs.chunks"]
        self._file_id = file_id
        self._reads = reads
        self._key_batch = max(1, key_batch)
        self._guard = guard
        self._progress = time.monotonic()

    async def read(self, first: int, last: int) -> AsyncIterator[bytes]:
        expected, ahead, failures = first, dict[int, bytes](), 0
        while expected <= last:
            before = expected
            pass_ = self._pass(expected, last)
            try:
                while expected <= last:
                    item = await self._next(pass_)
                    if item is None:
                        break
                    n, data = item
                    if n == expected:
                        yield data
                        expected += 1
                        while expected in ahead:
                            yield ahead.pop(expected)
                            expected += 1
                        self._progress, failures = time.monotonic(), 0
                    elif expected < n <= min(last, expected + AHEAD) and len(ahead) < AHEAD:
                        ahead[n] = data
            except (PyMongoError, TimeoutError) as exc:
                failures += 1
                await self._before_retry(exc, expected, failures)
                continue
            finally:
                await pass_.aclose()
            if expected == before and expected <= last:
                raise OSError(f"GridFS file {self._file_id} is missing chunk {expected}")

    async def _before_retry(self, exc: BaseException, expected: int, failures: int) -> None:
        waited = time.monotonic() - self._progress
        if self._guard is None or waited >= self._guard.retry_s:
            log.error(
                "reading GridFS file %s stopped at chunk %d after %.1f s without progress: %s",
                self._file_id,
                expected,
                waited,
                exc,
            )
            raise StoreUnavailable(f"the store did not deliver chunk {expected} of {self._file_id}: {exc}") from exc
        pause = min(0.25 * 2 ** (failures - 1), self._guard.reply_s)
        log.warning(
            "reading GridFS file %s: chunk %d failed (%s: %s); retrying in %.2f s (%.1f s without progress)",
            self._file_id,
            expected,
            type(exc).__name__,
            exc,
            pause,
            waited,
        )
        await asyncio.sleep(pause)

    async def _next(self, pass_: AsyncIterator[tuple[int, bytes]]) -> tuple[int, bytes] | None:
        """The pass's next chunk; with a guard, waited for while the store says it is alive."""
        if self._guard is None:
            return await anext(pass_, None)
        return await self._guard.wait(anext(pass_, None), self._progress, f"reading GridFS file {self._file_id}")

    def _pass(self, first: int, last: int) -> AsyncGenerator[tuple[int, bytes]]:
        if self._reads is ChunkReads.KEYS:
            return self._by_keys(first, last)
        return self._query(first, last, sort=self._reads is ChunkReads.RANGE)

    async def _query(self, first: int, last: int, *, sort: bool) -> AsyncGenerator[tuple[int, bytes]]:
        # RANGE: MongoDB walks the (files_id, n) index and streams the batches. SCAN: no sort, so a store
        # without that index streams the collection once instead of sorting the file in memory.
        cursor = self._chunks.find(
            {"files_id": self._file_id, "n": {"$gte": first, "$lte": last}}, {"_id": 0, "n": 1, "data": 1}
        ).batch_size(BATCH_CHUNKS)
        if sort:
            cursor = cursor.sort([("n", 1)])
        try:
            async for chunk in cursor:
                yield int(chunk["n"]), bytes(chunk["data"])
        finally:
            await cursor.close()

    async def _by_keys(self, first: int, last: int) -> AsyncGenerator[tuple[int, bytes]]:
        """Look-ups of key_batch chunks each, the next one already asked for while one is yielded."""

        def fetch(low: int) -> asyncio.Future[list[dict[str, Any]]]:
            keys = list(range(low, min(last, low + self._key_batch - 1) + 1))
            n: Any = {"$in": keys} if len(keys) > 1 else keys[0]
            query = {"files_id": self._file_id, "n": n}
            return asyncio.ensure_future(self._chunks.find(query, {"_id": 0, "n": 1, "data": 1}).to_list())

        # ~BATCH_CHUNKS chunks in flight (at least two look-ups): the next ones come while these are sent.
        depth = max(2, BATCH_CHUNKS // self._key_batch) * self._key_batch
        window = deque(fetch(low) for low in range(first, min(last + 1, first + depth), self._key_batch))
        following = first + len(window) * self._key_batch
        try:
            while window:
                docs = await window.popleft()
                if following <= last:
                    window.append(fetch(following))
                    following += self._key_batch
                for doc in sorted(docs, key=lambda d: int(d["n"])):
                    yield int(doc["n"]), bytes(doc["data"])
        finally:
            for pending in window:
                pending.cancel()
            # Let cancelled look-ups finish unwinding (and release their connections) before returning.
            await asyncio.gather(*window, return_exceptions=True)
