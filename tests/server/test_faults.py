"""Faults with nothing lost: a server killed mid-upload, orphan sweeps, many concurrent writers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from bson import ObjectId
from pymongo import MongoClient

from flrepo.server.embedded import free_port
from flrepo.server.storage.db import Database
from flrepo.server.storage.sweep import sweep
from tests.helpers import CHUNK, create_app, drop, grid_counts, make_model, make_settings, payload, sha, upload


@pytest.fixture
def settings(mongo_url):
    """This module's database, with a generous bound on each store operation: fifty uploads at once on
    a busy machine queue for the embedded store far longer than the usual 10 s (they answered 503 at
    load 30); the bound only says how long an answer may take, every assertion stays."""
    s = make_settings(mongo_url, db_timeout_ms=120_000)
    yield s
    drop(s)


def _start_server(settings, port):
    env = {
        **os.environ,
        "FLREPO_MONGODB_URL": settings.mongodb_url,
        "FLREPO_DB_NAME": settings.db_name,
        "FLREPO_GRIDFS_DB_NAME": settings.gridfs_db_name,
        "FLREPO_SWEEP_INTERVAL_S": "0",
        "FLREPO_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flrepo.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Generous bounds: the process starts and answers late on a busy machine, never wrongly.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def test_sigkill_mid_upload_keeps_previous_file(settings, raw_db):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_server(settings, port)
    try:
        httpx.post(f"{base}/model", json={"model_name": "m", "model_version": "v", "meta": {"library": "k"}})
        old = payload(CHUNK + 10)
        r = httpx.put(f"{base}/model/m/v", files={"file": ("old.bin", old)})
        assert r.status_code == 204
        assert grid_counts(raw_db) == (1, 2)

        sent = threading.Event()

        # PyMongo's GridIn batches up to 32 MiB of chunks per insert, so send well past that
        # before the kill, then keep the upload going slowly so it cannot finish first.
        def slow_body():
            for i in range(2000):
                yield os.urandom(64 * 1024)
                if i == 640:
                    sent.set()
                time.sleep(0.01 if i > 640 else 0)

        def uploader():
            try:
                httpx.put(
                    f"{base}/model/m/v",
                    content=slow_body(),
                    headers={"content-type": "application/octet-stream"},
                    timeout=120,
                )
            except httpx.HTTPError:
                pass  # the server dies under it

        thread = threading.Thread(target=uploader, daemon=True)
        thread.start()
        assert sent.wait(180), "40 MiB of the upload were not sent in 3 minutes"
        deadline = time.monotonic() + 120
        while grid_counts(raw_db)[1] <= 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert grid_counts(raw_db)[1] > 2, "the killed upload never reached GridFS"
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        thread.join(150)
    finally:
        if proc.poll() is None:
            proc.kill()

    proc = _start_server(settings, port)
    try:
        r = httpx.get(f"{base}/model/m/v")
        assert r.status_code == 200 and sha(r.content) == sha(old)
        meta = httpx.get(f"{base}/model/meta", params={"model_name": "m", "model_version": "v"}).json()
        assert meta["size"] == len(old) and meta["filename"] == "old.bin"
        files, chunks = grid_counts(raw_db)
        assert files == 1 and chunks > 2  # the dead upload's chunks are still there ...

        async def sweep_now():
            db = Database.connect(settings)
            try:
                return await sweep(db, timedelta(0))
            finally:
                await db.close()

        report = asyncio.run(sweep_now())  # ... until the sweep removes them
        assert report.orphan_chunk_sets == 1 and report.orphan_files == 0
        assert grid_counts(raw_db) == (1, 2)
        assert sha(httpx.get(f"{base}/model/m/v").content) == sha(old)
    finally:
        proc.kill()
        proc.wait(10)


async def test_sweep_removes_orphans_and_keeps_referenced(client, app, raw_db):
    db = app.state.db
    await make_model(client)
    kept = payload(CHUNK + 1)
    await upload(client, "/model/m/v1", kept)
    # A whole file nobody points to (crash between writing a file and switching to it).
    orphan_id = await db.bucket.upload_from_stream("orphan.bin", payload(100))
    # Chunks of an upload that never finished.
    raw_db[1]["fs.chunks"].insert_many(
        [{"files_id": ObjectId(), "n": 0, "data": b"x" * 10}, {"files_id": (dead := ObjectId()), "n": 0, "data": b"y"}]
    )
    raw_db[1]["fs.chunks"].insert_one({"files_id": dead, "n": 1, "data": b"z"})

    # Within the grace period nothing is touched: it could be an upload in progress.
    report = await sweep(db, timedelta(hours=1))
    assert report.orphan_files == 0 and report.orphan_chunk_sets == 0
    assert grid_counts(raw_db) == (2, 6)

    report = await sweep(db, timedelta(0))
    assert (report.orphan_files, report.orphan_chunk_sets, report.chunks_removed) == (1, 2, 3)
    assert grid_counts(raw_db) == (1, 2)
    assert raw_db[1]["fs.files"].find_one({"_id": orphan_id}) is None
    assert (await client.get("/model/m/v1")).content == kept


@pytest.mark.parametrize("count", [1, 2, 7, 8, 37])
async def test_sweep_judges_an_unfinished_upload_by_its_newest_chunk(app, raw_db, count):
    """A slow upload whose first chunks are old but whose last one is fresh is still in progress."""
    db = app.state.db
    files_id = ObjectId()
    old, fresh = datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC)
    raw_db[1]["fs.chunks"].insert_many(
        [{"files_id": files_id, "n": n, "data": b"c", "at": fresh if n == count - 1 else old} for n in range(count)]
    )
    report = await sweep(db, timedelta(hours=1))
    assert report.orphan_chunk_sets == 0 and grid_counts(raw_db) == (0, count)
    raw_db[1]["fs.chunks"].update_one({"files_id": files_id, "n": count - 1}, {"$set": {"at": old}})
    report = await sweep(db, timedelta(hours=1))
    assert (report.orphan_chunk_sets, report.chunks_removed) == (1, count) and grid_counts(raw_db) == (0, 0)


@pytest.mark.parametrize("uploads", [50])
async def test_fifty_concurrent_uploads_to_one_model(client, raw_db, uploads):
    await make_model(client)
    blobs = [payload(CHUNK + 1 + i) for i in range(uploads)]
    responses = await asyncio.gather(*(upload(client, "/model/m/v1", b) for b in blobs))
    assert [r.status_code for r in responses] == [204] * uploads
    r = await client.get("/model/m/v1")
    assert r.content in blobs
    meta = (await client.get("/model/meta", params={"model_name": "m", "model_version": "v1"})).json()
    assert meta["sha256"] == sha(r.content) and meta["size"] == len(r.content)
    assert grid_counts(raw_db) == (1, 2)


async def test_two_hundred_concurrent_creates(client):
    body = {"model_name": "race", "model_version": "v1", "meta": {"library": "k"}}
    responses = await asyncio.gather(*(client.post("/model", json=body) for _ in range(200)))
    codes = [r.status_code for r in responses]
    assert codes.count(201) == 1 and codes.count(409) == 199


async def test_the_service_sweeps_by_itself(mongo_url):
    """With FLREPO_SWEEP_INTERVAL_S set, the running service removes dead uploads without being asked."""
    settings = make_settings(mongo_url, sweep_interval_s=0.2, sweep_grace_s=0)
    application = create_app(settings)
    try:
        with MongoClient(settings.mongodb_url) as c:
            c[settings.gridfs_db_name]["fs.chunks"].insert_one({"files_id": ObjectId(), "n": 0, "data": b"x"})
            async with application.router.lifespan_context(application):
                deadline = time.monotonic() + 20
                while c[settings.gridfs_db_name]["fs.chunks"].count_documents({}):
                    assert time.monotonic() < deadline, "the background sweep did not run"
                    await asyncio.sleep(0.1)
    finally:
        drop(settings)
