"""File reads: the strategy explain shows the store serves fast, exact bytes with every strategy,
and a download that a frozen store interrupts resumes (or ends cleanly once its retry budget is spent)."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from pathlib import Path

import httpx
import pytest
from bson import ObjectId

from flrepo.server.embedded import EmbeddedMongo
from flrepo.server.main import create_app
from flrepo.server.storage import gridfs as gridio
from flrepo.server.storage import probe
from flrepo.server.storage.db import Database
from flrepo.server.storage.dialect import ChunkReads
from tests.helpers import LiveServer, make_settings
from tests.server.test_database_down import wait_stopped

UNPATCHED = Path(__file__).resolve().parents[2] / "tools" / "bin" / "ferretdb-unpatched"
SIZE = 10  # bytes per chunk in the hand-made files below


async def _store(settings) -> Database:
    db = Database.connect(settings)
    await db.ensure_indexes()
    return db


async def test_the_read_strategy_follows_what_explain_shows(settings):
    db = await _store(settings)
    try:
        info = await db.client.admin.command("buildInfo")
        if "ferretdbVersion" in info:  # the embedded store: tools/bin/ferretdb, with the pushdown patch
            # Batched key look-ups search both index columns; any order but GridFS's ascending chunk
            # order (list pages by _id, the sweep's descending n) is sorted in memory.
            assert (db.dialect.chunk_reads, db.dialect.key_batch) == (ChunkReads.KEYS, probe.KEY_BATCH)
            assert not db.dialect.streams_sorted_reads
        else:
            assert db.dialect.chunk_reads is ChunkReads.RANGE and db.dialect.streams_sorted_reads
    finally:
        await db.close()


@pytest.mark.skipif(not UNPATCHED.exists(), reason="tools/bin/ferretdb-unpatched not built (make test builds it)")
async def test_ferretdb_as_released_is_read_in_one_unsorted_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("FLREPO_FERRETDB_BIN", str(UNPATCHED))
    with EmbeddedMongo(tmp_path / "data", log_file=tmp_path / "ferretdb.log") as server:
        db = await _store(make_settings(server.url))
        try:
            assert db.dialect.chunk_reads is ChunkReads.SCAN
        finally:
            await db.close()


async def _write_chunks(db: Database, order: list[int], missing: int | None = None) -> tuple[ObjectId, bytes]:
    """A file of len(order) chunks of SIZE bytes (the last one shorter), inserted in `order`."""
    fid = ObjectId()
    count = len(order)
    data = os.urandom(SIZE * count - 3)
    chunks = db.grid["fs.chunks"]
    for n in order:
        if n != missing:
            piece = data[n * SIZE : (n + 1) * SIZE]
            await chunks.insert_one({"_id": gridio.chunk_id(fid, n), "files_id": fid, "n": n, "data": piece})
    return fid, data


async def _read(db: Database, fid: ObjectId, size: int, reads: ChunkReads, start: int, length: int) -> bytes:
    doc = {"_id": fid, "chunkSize": SIZE, "length": size}
    parts = gridio.read_range(db.grid, doc, start, length, reads=reads, key_batch=4 if reads is ChunkReads.KEYS else 1)
    return b"".join([part async for part in parts])


@pytest.mark.parametrize("reads", list(ChunkReads))
async def test_every_strategy_reads_exact_bytes_whatever_order_chunks_were_stored_in(settings, reads):
    db = await _store(settings)
    try:
        count = gridio_ahead = gridio.AHEAD * 3 + 5  # more out of order than one pass keeps
        shuffled = list(range(count))
        random.Random(7).shuffle(shuffled)
        for order in (list(range(count)), list(reversed(range(count))), shuffled):
            fid, data = await _write_chunks(db, order)
            for start, length in ((0, len(data)), (3, 41), (SIZE * 5, SIZE), (len(data) - 4, 4), (17, 1)):
                assert await _read(db, fid, len(data), reads, start, length) == data[start : start + length]
        assert gridio_ahead > gridio.AHEAD
    finally:
        await db.close()


@pytest.mark.parametrize("reads", list(ChunkReads))
async def test_a_missing_chunk_is_an_error_never_a_short_or_spliced_file(settings, reads):
    db = await _store(settings)
    try:
        fid, data = await _write_chunks(db, list(reversed(range(30))), missing=12)
        with pytest.raises(OSError, match="missing chunk 12"):
            await _read(db, fid, len(data), reads, 0, len(data))
        assert await _read(db, fid, len(data), reads, 0, 12 * SIZE) == data[: 12 * SIZE]
    finally:
        await db.close()


def _download_across_a_freeze(tmp_path: Path, freeze_s: float, retry_s: float) -> tuple[bytes, bytes, str | None]:
    """Upload a file, start downloading it, freeze the store (SIGSTOP) right after the headers arrive for
    `freeze_s`, then read on. Returns (uploaded, received, the client's error if the body was cut)."""
    server = EmbeddedMongo(tmp_path / "data", log_file=tmp_path / "ferretdb.log").start()
    assert server.process is not None
    settings = make_settings(server.url, db_timeout_ms=1000, db_read_retry_s=retry_s)
    data = os.urandom(24 * 1024 * 1024)
    received, error = bytearray(), None
    try:
        with LiveServer(create_app(settings)) as live, httpx.Client(base_url=live.url, timeout=120) as client:
            body = {"model_name": "m", "model_version": "v", "meta": {"library": "k"}}
            assert client.post("/model", json=body).status_code == 201
            assert client.put("/model/m/v", content=data).status_code == 204
            with client.stream("GET", "/model/m/v") as r:
                assert r.status_code == 200
                os.kill(server.process.pid, signal.SIGSTOP)
                wait_stopped(server.process.pid)
                # The client's reads block while the store is frozen: a timer ends the freeze.
                thaw = threading.Timer(freeze_s, os.kill, (server.process.pid, signal.SIGCONT))
                thaw.start()
                try:
                    for part in r.iter_raw(64 * 1024):
                        received += part
                except httpx.HTTPError as exc:
                    error = repr(exc)
                finally:
                    thaw.cancel()
                    os.kill(server.process.pid, signal.SIGCONT)
    finally:
        server.stop()
    return data, bytes(received), error


def test_a_download_resumes_after_the_store_froze_under_it(tmp_path, caplog):
    """The store stops answering mid-download for 4x the per-operation timeout: the read is retried
    (the log says so) and the client gets every byte, unchanged."""
    caplog.set_level(logging.INFO, logger="flrepo")
    data, received, error = _download_across_a_freeze(tmp_path, freeze_s=4.0, retry_s=60)
    assert error is None
    assert received == data
    assert "retrying" in caplog.text


def test_a_download_ends_cleanly_when_the_store_stays_frozen_past_the_budget(tmp_path, caplog):
    """Frozen longer than FLREPO_DB_READ_RETRY_S: the connection is closed before the announced length
    (the client sees a truncated body, never a spliced one) and the log says where and why."""
    data, received, error = _download_across_a_freeze(tmp_path, freeze_s=8.0, retry_s=2)
    assert error is not None and len(received) < len(data)
    assert received == data[: len(received)]
    assert "download aborted after" in caplog.text and "without progress" in caplog.text


async def test_a_read_that_fails_before_the_first_byte_answers_503(settings):
    """The first chunk is read before the status line: when it cannot be read (here: the file-reading
    client is gone while the rest of the service still reaches the store), the client gets a 503 it can
    retry, not a 200 with an empty or truncated body."""
    app = create_app(settings.model_copy(update={"db_read_retry_s": 0}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
            body = {"model_name": "m", "model_version": "v", "meta": {"library": "k"}}
            assert (await client.post("/model", json=body)).status_code == 201
            assert (await client.put("/model/m/v", content=b"z" * 600_000)).status_code == 204
            assert (await client.get("/model/m/v")).content == b"z" * 600_000
            db: Database = app.state.db
            assert db.reader is not None
            await db.reader.close()
            r = await client.get("/model/m/v")
            assert r.status_code == 503 and "unavailable" in r.json()["detail"]
            assert (
                await client.get("/model/meta", params={"model_name": "m", "model_version": "v"})
            ).status_code == 200
