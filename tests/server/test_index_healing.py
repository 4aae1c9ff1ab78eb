"""Indexes that heal: collections dropped and restored under a running service (`mongorestore --drop`
of an aerOS dump, the documented migration path) get their unique indexes back within the check
interval; while a unique index cannot be built /ready says so, and `flrepo migrate` names the duplicate."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
from pymongo import AsyncMongoClient

from flrepo.server.main import create_app
from flrepo.server.repository.migrate import migrate

STRATEGY = {"strategy_name": "fedavg", "strategy_description": "FedAvg", "meta": {"class": "FedAvg"}}
MODEL = {"model_name": "cnn", "model_version": "v1", "meta": {"library": "keras"}}
# An upper bound for "within the check interval" on a busy machine, not a speed goal.
BOUND = 30.0


async def _index_names(raw: AsyncMongoClient, db: str, collection: str) -> set[str]:
    return {ix["name"] async for ix in await raw[db][collection].list_indexes()}


async def _drop_and_restore(raw: AsyncMongoClient, db: str, collection: str) -> None:
    """What `mongorestore --drop` does to a collection of a dump without flrepo's indexes."""
    docs = await raw[db][collection].find({}).to_list()
    await raw[db][collection].drop()
    if docs:
        await raw[db][collection].insert_many(docs)


async def test_dropped_indexes_come_back_within_the_interval_and_refuse_duplicates(settings):
    app = create_app(settings.model_copy(update={"index_check_interval_s": 0.5}))
    async with app.router.lifespan_context(app), AsyncMongoClient(settings.mongodb_url) as raw:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/strategy", json=STRATEGY)).status_code == 201
            assert (await client.post("/model", json=MODEL)).status_code == 201
            for collection in ("strategies", "models"):
                await _drop_and_restore(raw, settings.db_name, collection)
                assert "natural_key" not in await _index_names(raw, settings.db_name, collection)
            started = time.monotonic()
            while not all(
                ["natural_key" in await _index_names(raw, settings.db_name, c) for c in ("strategies", "models")]
            ):
                assert time.monotonic() - started < BOUND, "indexes not re-created"
                await asyncio.sleep(0.1)
            assert (await client.post("/strategy", json=STRATEGY)).status_code == 409
            assert (await client.post("/model", json=MODEL)).status_code == 409
            assert await raw[settings.db_name]["strategies"].count_documents({}) == 1
            assert (await client.get("/ready")).status_code == 200


async def test_a_duplicate_made_meanwhile_keeps_the_service_not_ready_and_is_reported(settings):
    # No periodic check here: /ready checks (and heals) on its own.
    app = create_app(settings.model_copy(update={"index_check_interval_s": 0}))
    async with app.router.lifespan_context(app), AsyncMongoClient(settings.mongodb_url) as raw:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/strategy", json=STRATEGY)).status_code == 201
            await _drop_and_restore(raw, settings.db_name, "strategies")
            # Before any check runs, nothing refuses the second copy.
            assert (await client.post("/strategy", json=STRATEGY)).status_code == 201
            r = await client.get("/ready")
            assert r.status_code == 503 and "strategies" in r.json()["detail"], r.text
            assert "migrate" in r.json()["detail"]
            # Known now: a third copy is refused although there is still no unique index.
            assert (await client.post("/strategy", json=STRATEGY)).status_code == 409
            report = await migrate(app.state.db)
            assert any("fedavg" in key for key in report.duplicates) and not report.clean
            # Resolved by hand: the next check builds the index and the service is ready again.
            dup = await raw[settings.db_name]["strategies"].find({"strategy_name": "fedavg"}).to_list()
            await raw[settings.db_name]["strategies"].delete_one({"_id": dup[-1]["_id"]})
            assert (await client.get("/ready")).status_code == 200
            assert "natural_key" in await _index_names(raw, settings.db_name, "strategies")


async def _migrate_check(settings) -> tuple[int, str]:
    """`flrepo migrate --check` as a user runs it, against the service's databases."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLREPO_")}
    env.update(
        FLREPO_MONGODB_URL=settings.mongodb_url,
        FLREPO_DB_NAME=settings.db_name,
        FLREPO_GRIDFS_DB_NAME=settings.gridfs_db_name,
        FLREPO_LOG_LEVEL="WARNING",
    )
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "flrepo"),
        "migrate",
        "--check",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_migrate_check_reports_a_duplicate_made_while_the_index_was_missing_and_changes_nothing(settings):
    app = create_app(settings.model_copy(update={"index_check_interval_s": 0}))
    async with app.router.lifespan_context(app), AsyncMongoClient(settings.mongodb_url) as raw:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/strategy", json=STRATEGY)).status_code == 201
            code, out = await _migrate_check(settings)
            assert code == 0 and "check: clean" in out, out
            await _drop_and_restore(raw, settings.db_name, "strategies")
            code, out = await _migrate_check(settings)
            assert code == 6 and f"no unique index on {settings.db_name}.strategies" in out, out
            # Accepted before any index check has run: the duplicate the check must not keep silent.
            assert (await client.post("/strategy", json=STRATEGY)).status_code == 201
            before = await raw[settings.db_name]["strategies"].find({}, {"_id": 1}).to_list()
            code, out = await _migrate_check(settings)
            assert code == 6, out
            assert "duplicate key" in out and "strategy_name='fedavg': 2 documents" in out, out
            # Read only: both copies are still there, and no index was built behind the service's back.
            assert await raw[settings.db_name]["strategies"].find({}, {"_id": 1}).to_list() == before
            assert "natural_key" not in await _index_names(raw, settings.db_name, "strategies")
