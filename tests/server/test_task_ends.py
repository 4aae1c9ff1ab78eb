"""GET /tasks/{id}?wait_end=S: the read a local execution holds until its task ends — answered the
moment the task ends (a report, a cancel, the liveness check), after S seconds while it runs, and by
a re-read when another replica ended it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from flrepo.server.repository import task_ends
from flrepo.server.repository.liveness import fail_lost_collectors
from tests.helpers import PLAN, make_task_references

# Generous: the held read must come back long before its own wait when the task ends.
HELD_S = 25.0


async def _running(client, task_id: str = "t1", **plan) -> None:
    await make_task_references(client)
    body = {**PLAN, "task_id": task_id, "output_model_version": f"out-{task_id}", **plan}
    assert (await client.post("/tasks", json=body)).status_code == 201
    r = await client.put(f"/tasks/{task_id}/status", json={"phase": "Running", "collector": "h:1"})
    assert r.status_code == 200, r.text


async def _held(app, client, task_id: str = "t1") -> asyncio.Task:
    """A held read, once the service holds it."""
    read = asyncio.create_task(client.get(f"/tasks/{task_id}", params={"wait_end": HELD_S, "history": 0}))
    key = (app.state.db.meta.name, task_id)
    for _ in range(2000):
        if task_ends._waiting.get(key):
            break
        assert not read.done(), (await read).text
        await asyncio.sleep(0.01)
    assert task_ends._waiting.get(key), "the read was never held"
    return read


async def test_a_held_read_answers_when_the_task_is_cancelled(app, client):
    await _running(client)
    read = await _held(app, client)
    # Progress of a running task does not end the wait.
    assert (await client.put("/tasks/t1/status", json={"current_round": 1})).status_code == 200
    await asyncio.sleep(0)
    assert not read.done()
    started = asyncio.get_running_loop().time()
    assert (await client.post("/tasks/t1/cancel")).status_code == 200
    r = await asyncio.wait_for(read, HELD_S - 1)
    assert r.status_code == 200 and r.json()["phase"] == "Failed", r.text
    assert asyncio.get_running_loop().time() - started < HELD_S - 1  # not the wait running out
    assert not task_ends._waiting  # nobody left waiting


async def test_a_held_read_answers_when_the_collector_reports_the_end(app, client):
    await _running(client)
    read = await _held(app, client)
    assert (await client.put("/tasks/t1/status", json={"phase": "Succeeded"})).status_code == 200
    r = await asyncio.wait_for(read, HELD_S - 1)
    assert r.json()["phase"] == "Succeeded"


async def test_a_held_read_answers_when_the_liveness_check_fails_the_task(app, client):
    await _running(client, heartbeat_timeout=5)
    read = await _held(app, client)
    assert await fail_lost_collectors(app.state.db, datetime.now(UTC) + timedelta(seconds=30)) == ["t1"]
    r = await asyncio.wait_for(read, HELD_S - 1)
    assert r.json()["phase"] == "Failed" and r.json()["conditions"][-1]["reason"] == "CollectorLost"


async def test_another_replicas_change_is_seen_at_the_re_read(app, client, raw_db, monkeypatch):
    monkeypatch.setattr(task_ends, "RECHECK_SECONDS", 0.2)
    await _running(client)
    read = await _held(app, client)
    meta, _ = raw_db  # written around this process, as another replica would
    meta["tasks"].update_one({"task_id": "t1"}, {"$set": {"phase": "Failed"}})
    r = await asyncio.wait_for(read, HELD_S - 1)
    assert r.json()["phase"] == "Failed"


async def test_a_held_read_of_a_running_task_ends_with_its_wait(client):
    await _running(client)
    r = await client.get("/tasks/t1", params={"wait_end": 0.3})
    assert r.status_code == 200 and r.json()["phase"] == "Running"


async def test_an_ended_or_missing_task_is_answered_at_once(client):
    await _running(client)
    await client.post("/tasks/t1/cancel")
    r = await asyncio.wait_for(client.get("/tasks/t1", params={"wait_end": HELD_S}), HELD_S - 1)
    assert r.json()["phase"] == "Failed"
    r = await asyncio.wait_for(client.get("/tasks/nope", params={"wait_end": HELD_S}), HELD_S - 1)
    assert r.status_code == 404


async def test_the_wait_is_bounded(client):
    await _running(client)
    for bad in (-1, task_ends.MAX_WAIT_SECONDS + 1, "soon"):
        r = await client.get("/tasks/t1", params={"wait_end": bad})
        assert r.status_code == 422 and "wait_end" in r.text, r.text
