"""A status report starts from the task as this process last wrote it (flrepo.server.repository.task_copies):
whatever another writer changed since — another replica, a site, a checkpoint, a cancel — still decides
the report, as if the task had been read first."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx

from flrepo.server.main import create_app
from flrepo.server.repository import task_copies
from flrepo.server.repository.liveness import fail_lost_collectors
from tests.helpers import make_task


@contextlib.asynccontextmanager
async def _replica(settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another API process on the same database: its own client, lock and copies."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as client:
            yield client


async def _report(client, n: int, **fields):
    r = await client.put("/tasks/t1/status", json={"current_round": n, "round": {"round": n}, **fields})
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_report_after_another_replicas_starts_from_the_stored_task(client, settings, raw_db):
    await make_task(client, "t1")
    await client.put("/tasks/t1/status", json={"phase": "Running"})
    await _report(client, 1)
    async with _replica(settings) as other:
        await _report(other, 2, reason="Elsewhere", message="from the other replica")
    task = await _report(client, 3, reason="Here")
    # The other replica's round and condition are kept, and every round got its own sequence number.
    assert [h["round"] for h in task["history"]] == [1, 2, 3] and task["history_total"] == 3
    assert [c["reason"] for c in task["conditions"]][-2:] == ["Elsewhere", "Here"]
    kept = raw_db[0]["task_rounds"].find({"task_id": "t1"}).sort("seq", 1)
    assert [(h["seq"], h["round"]) for h in kept] == [(1, 1), (2, 2), (3, 3)]
    assert (await client.get("/tasks/t1")).json()["history"] == task["history"]


async def test_a_phase_change_elsewhere_decides_the_next_report(client, settings):
    await make_task(client, "t1")
    assert (await client.put("/tasks/t1/status", json={"reason": "Waiting"})).json()["phase"] == "Pending"
    async with _replica(settings) as other:
        assert (await other.put("/tasks/t1/status", json={"phase": "Running"})).status_code == 200
    # Pending -> Succeeded is refused; the task as stored is Running, from which it is allowed.
    r = await client.put("/tasks/t1/status", json={"phase": "Succeeded"})
    assert r.status_code == 200 and r.json()["phase"] == "Succeeded", r.text
    # And the other way round: what this process wrote last allows the report, the stored task does not.
    await make_task(client, "t2", output_model_version="t2-out")
    await client.put("/tasks/t2/status", json={"phase": "Running"})
    async with _replica(settings) as other:
        assert (await other.post("/tasks/t2/cancel")).status_code == 200
    r = await client.put("/tasks/t2/status", json={"current_round": 1})
    assert r.status_code == 409 and "Failed" in r.json()["detail"]


async def test_other_writers_of_this_process_drop_the_copy(client, app):
    """So that the next report reads the task at once instead of first trying a copy that cannot match."""
    db = app.state.db
    await make_task(client, "t1")
    await client.put("/tasks/t1/status", json={"phase": "Running"})
    await _report(client, 1)
    assert task_copies.take(db, "t1") is not None
    await _report(client, 2)
    assert (await client.put("/tasks/t1/sites", json={"site": "s1", "state": "joining"})).status_code == 200
    assert task_copies.take(db, "t1") is None
    await _report(client, 3)
    assert (await client.post("/tasks/t1/claim", json={"collector": "c"})).status_code == 200
    assert task_copies.take(db, "t1") is None
    await _report(client, 4)
    assert await fail_lost_collectors(db, now=datetime.now(UTC) + timedelta(days=1)) == ["t1"]
    assert task_copies.take(db, "t1") is None
    await make_task(client, "t2", output_model_version="t2-out")
    await client.put("/tasks/t2/status", json={"phase": "Running"})
    assert (await client.post("/tasks/t2/cancel")).status_code == 200
    assert (await client.delete("/tasks/t2")).status_code == 204
    assert task_copies.take(db, "t2") is None
