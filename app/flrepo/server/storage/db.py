"""The database handle: client, collections, GridFS bucket and the indexes they rely on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gridfs import AsyncGridFSBucket
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from flrepo.server.settings import Settings
from flrepo.server.storage import probe
from flrepo.server.storage.dialect import Dialect
from flrepo.server.storage.gridfs import ReadGuard, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long `waited` lets an operation run before it first asks whether the store is alive.
FIRST_CHECK_S = 0.1

# Natural keys of each collection; unique indexes on them are what make concurrent creates safe.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "models": ("model_name", "model_version"),
    "results": ("model_name", "model_version", "training_id"),
    "strategies": ("strategy_name",),
    "transformations": ("id",),
    "tasks": ("task_id",),
    "checkpoints": ("task_id", "round"),
    "collectors": ("name", "version"),
    "task_rounds": ("task_id", "seq"),
}
FIRST_CHUNKS_INDEX = "first_chunks"
# The aerOS field of each collection that holds its file's GridFS id (as a string).
FILE_FIELDS: dict[str, str] = {
    "models": "model_id",
    "results": "weights_id",
    "strategies": "strategy_id",
    "transformations": "storage_id",
    "checkpoints": "weights_id",
}
# Every field of any document that may hold a GridFS id: the sweep keeps whatever these point at.
# aerOS 1.1.0's collector model has a `collector_id` (aerOS itself never stored a file under it).
REFERENCE_FIELDS: dict[str, str] = {**FILE_FIELDS, "collectors": "collector_id"}
# Resumable (tus) uploads in progress: each names the GridFS file its chunks are written to, which has
# no files document until the upload completes. The sweep leaves those chunks alone until it expires.
UPLOADS = "uploads"
# A task's round records, one document each (flrepo.server.repository.rounds).
ROUNDS = "task_rounds"
UPLOAD_FILE_FIELD = "file_id"


@dataclass
class Database:
    """Everything a request needs to reach MongoDB; one per application."""

    client: AsyncMongoClient
    meta: AsyncDatabase
    grid: AsyncDatabase
    bucket: AsyncGridFSBucket
    chunk_bytes: int
    # File reads: `grid` on a client without the per-reply bound, watched by `read_guard` instead, so a
    # slow store (a long scan before the first chunk) is waited for and a dead one is not.
    read_guard: ReadGuard | None = None
    reader: AsyncMongoClient | None = None
    # MongoDB's rules until the server has said what it is (on first contact, see ensure_indexes).
    dialect: Dialect = field(default_factory=lambda: Dialect.from_build_info({}))
    # Collections whose unique natural-key index could not be built (duplicates from aerOS days).
    unindexed: set[str] = field(default_factory=set)
    _indexes_ready: bool = False
    _index_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def connect(cls, settings: Settings, *, bounded: bool = True) -> Database:
        """A handle on the databases `settings` name; the client connects lazily, so the service starts
        even while the database is down.

        `bounded` (the service): every operation waits at most FLREPO_DB_TIMEOUT_MS for the database —
        to be selected (serverSelectionTimeoutMS), to connect (connectTimeoutMS), and for each reply
        (socketTimeoutMS: a frozen, not dead, server never answers, and without it a request hangs until
        the driver's monitor gives up), each tried once. The driver's own operation timeout (timeoutMS)
        would send maxTimeMS with every command, which FerretDB refuses. Work that is nobody's request (the
        orphan sweep, dump, restore) may run long operations and passes False: only selection and
        connecting are bounded there.
        """
        timeouts: dict[str, Any] = {
            "serverSelectionTimeoutMS": settings.db_timeout_ms,
            "connectTimeoutMS": settings.db_timeout_ms,
        }
        if bounded:
            timeouts["socketTimeoutMS"] = settings.db_timeout_ms
            # One attempt per operation: the driver's retry would wait the whole timeout a second time.
            # Clients retry a 503 themselves (the SDK does, with backoff, for idempotent calls).
            timeouts["retryReads"] = False
            timeouts["retryWrites"] = False
        client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True, appname="flrepo", **timeouts)
        grid = client[settings.gridfs_db_name]
        db = cls(
            client=client,
            meta=client[settings.db_name],
            grid=grid,
            bucket=AsyncGridFSBucket(grid, chunk_size_bytes=settings.gridfs_chunk_bytes),
            chunk_bytes=settings.gridfs_chunk_bytes,
        )
        if bounded:
            reader: AsyncMongoClient = AsyncMongoClient(
                settings.mongodb_url,
                tz_aware=True,
                appname="flrepo-files",
                serverSelectionTimeoutMS=settings.db_timeout_ms,
                connectTimeoutMS=settings.db_timeout_ms,
                retryReads=False,
            )
            db.reader = reader
            db.read_guard = ReadGuard(
                reply_s=settings.db_timeout_ms / 1000, retry_s=settings.db_read_retry_s, alive=db.alive
            )
        return db

    @property
    def read_grid(self) -> AsyncDatabase:
        """The GridFS database as file reads reach it (see `reader`)."""
        return self.grid if self.reader is None else self.reader[self.grid.name]

    @property
    def read_meta(self) -> AsyncDatabase:
        """The metadata database as long reads (lists) reach it: through `reader`, watched by `waited`."""
        return self.meta if self.reader is None else self.reader[self.meta.name]

    async def waited(self, step: Awaitable[T], what: str) -> T:
        """`step` (an operation through `reader`), waited for while the store answers pings; StoreUnavailable
        (503) once it does not (Database.read_guard)."""
        if self.read_guard is None:
            return await step
        try:
            # The first ping soon: a frozen store answers 503 within about one FLREPO_DB_TIMEOUT_MS, as a
            # bounded operation would, while a slow one that answers is waited for.
            return await self.read_guard.wait(step, time.monotonic(), what, first_check=FIRST_CHECK_S)
        except TimeoutError as exc:
            raise StoreUnavailable(f"{what}: {exc}") from exc

    def collection(self, name: str) -> AsyncCollection:
        return self.meta[name]

    async def ensure_indexes(self) -> None:
        """Create the indexes once; later calls return at once (check_indexes heals them afterwards).

        Called before every database-backed request, so a service that started while the
        database was down still gets its unique indexes before it accepts a write.
        """
        if self._indexes_ready:
            return
        async with self._index_lock:
            if self._indexes_ready:
                return
            self.dialect = Dialect.from_build_info(await self.client.admin.command("buildInfo"))
            await self._create_indexes()
            reads, batch, streams = await probe.chunk_reads(self.grid)
            self.dialect = self.dialect.measured(reads, batch, streams)
            log.info("store: %s; file chunks read by %s (%d per look-up)", self.dialect.name, reads, batch)
            self._indexes_ready = True
            log.info("indexes ready in %s", self.meta.name)

    async def _create_indexes(self) -> None:
        for name, keys in NATURAL_KEYS.items():
            await self._natural_key_index(name, keys)
        await self.meta["models"].create_index([("uploaded_at", DESCENDING)], name="uploaded_at")
        await self.meta["results"].create_index([("weights_id", ASCENDING)], name="weights_id")
        # GridFS would create these lazily on the first upload; doing it here keeps index
        # builds out of concurrent first uploads.
        await self.grid["fs.files"].create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
        await self.grid["fs.chunks"].create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
        if not self.dialect.indexed_distinct:
            # The sweep finds chunk sets by their first chunk where `distinct` would read them all.
            await self.grid["fs.chunks"].create_index([("n", ASCENDING)], name=FIRST_CHUNKS_INDEX)

    async def check_indexes(self) -> list[str]:
        """Re-create any index that went missing (a collection dropped and restored under the running
        service, e.g. `mongorestore --drop`), with a warning; return the collections that still have no
        unique natural-key index (it could not be built: they hold a key twice)."""
        await self.ensure_indexes()
        async with self._index_lock:
            missing = [f"{self.meta.name}.{name}" for name in NATURAL_KEYS if not await self._has(self.meta[name])]
            missing += [f"{self.grid.name}.fs.chunks"] if not await self._has(self.grid["fs.chunks"]) else []
            if set(missing) - {f"{self.meta.name}.{name}" for name in self.unindexed}:
                log.warning("unique indexes missing on %s (dropped under the service?); re-creating", missing)
            if missing:
                await self._create_indexes()
        return sorted(self.unindexed)

    @staticmethod
    async def _has(coll: AsyncCollection) -> bool:
        return await has_unique_index(coll)

    async def _natural_key_index(self, name: str, keys: tuple[str, ...]) -> None:
        try:
            await self.meta[name].create_index([(k, ASCENDING) for k in keys], unique=True, name="natural_key")
            self.unindexed.discard(name)
        except OperationFailure:
            # aerOS had no unique index, so a database it wrote may hold one key twice. Refusing to
            # start would keep its users from their data: serve it, and say what to resolve.
            group = {"_id": {k: f"${k}" for k in keys}, "count": {"$sum": 1}}
            cursor = await self.meta[name].aggregate([{"$group": group}, {"$match": {"count": {"$gt": 1}}}])
            duplicated = await cursor.to_list()
            if not duplicated:
                raise
            self.unindexed.add(name)
            log.error(
                "%s holds %d keys more than once (e.g. %s): no unique index on %s until they are resolved "
                "(`flrepo migrate` lists them); creating items there is not race-free meanwhile",
                name,
                len(duplicated),
                duplicated[0]["_id"],
                ", ".join(keys),
            )

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def alive(self) -> bool:
        """The store answers a ping within the per-operation bound."""
        try:
            await self.ping()
        except PyMongoError:
            return False
        return True

    async def close(self) -> None:
        if self.reader is not None:
            await self.reader.close()
        await self.client.close()


async def has_unique_index(coll: AsyncCollection) -> bool:
    """`coll` has the unique index the service makes for it (natural key, or GridFS chunks' files_id + n)."""
    names = {index["name"] async for index in await coll.list_indexes()}
    return bool(names & {"natural_key", "files_id_1_n_1"})


async def watch_indexes_forever(db: Database, interval_s: float) -> None:
    """check_indexes every `interval_s` seconds, for as long as the service runs."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await db.check_indexes()
        except PyMongoError as exc:  # the database is down: /ready says so; check again next time
            log.warning("index check failed: %s", exc)
