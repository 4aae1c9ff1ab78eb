"""Tasks that never get stuck: heartbeats, the service failing tasks whose collector went silent,
cancel, and the status a collector publishes (runtime, address, CA, participant counts)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from flrepo.server.main import create_app
from flrepo.server.repository.liveness import fail_lost_collectors
from tests.helpers import PLAN, drop, make_settings, make_task_references

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
# A real OpenSSH ECDSA P-256 public key (its private half was never kept).
KEY = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNwRk1vSQcbxFDJQu2uSrWu9Rpi/"
    "n222yl2P52lFPW8uHkq+xfgZsj2MhCd7AmNCXn+4A0naNX7cE0ptNG4cjsw= site-1"
)


async def _running(client, **plan):
    await make_task_references(client)
    r = await client.post("/tasks", json={**PLAN, **plan})
    assert r.status_code == 201, r.text
    r = await client.put("/tasks/t1/status", json={"phase": "Running", "reason": "ServerStarted", "collector": "h:1"})
    assert r.status_code == 200, r.text
    return r.json()


async def test_new_task_defaults_and_checked_keys(client):
    await make_task_references(client)
    task = (await client.post("/tasks", json={**PLAN, "participant_keys": [KEY]})).json()
    assert (task["heartbeat_timeout"], task["participants_timeout"]) == (60, 300)
    assert task["participant_keys"] == [KEY] and task["heartbeat"] is None
    assert (task["active"], task["succeeded"], task["failed"], task["runtime"], task["server_address"]) == (
        0,
        0,
        0,
        None,
        None,
    )
    bad_keys = (["ssh-rsa AAAAB3NzaC1yc2E="], [KEY.replace("AAAAE2Vj", "AAAAE2Xj")], ["ecdsa-sha2-nistp256 !!"])
    for keys in bad_keys:
        r = await client.post("/tasks", json={**PLAN, "task_id": "t2", "participant_keys": keys})
        assert r.status_code == 422 and "participant_keys" in r.text, keys
    for bad in ({"heartbeat_timeout": 1}, {"participants_timeout": 0}):
        assert (await client.post("/tasks", json={**PLAN, "task_id": "t3", **bad})).status_code == 422, bad


async def test_every_report_of_a_running_task_is_a_heartbeat_with_its_round(client):
    task = await _running(client)
    first = task["heartbeat"]
    assert first["round"] == 0 and first["collector"] == "h:1"
    assert task["conditions"][-1]["type"] == "Training" and task["conditions"][-1]["reason"] == "ServerStarted"
    await asyncio.sleep(0.01)
    update = {"current_round": 2, "collector": "h:1", "active": 2, "succeeded": 1, "failed": 1}
    task = (await client.put("/tasks/t1/status", json=update)).json()
    assert task["heartbeat"]["round"] == 2 and task["heartbeat"]["time"] > first["time"]
    assert (task["active"], task["succeeded"], task["failed"]) == (2, 1, 1)
    task = (await client.put("/tasks/t1/status", json={"collector": "h:1"})).json()  # a bare heartbeat
    assert task["heartbeat"]["round"] == 2 and task["current_round"] == 2 and len(task["conditions"]) == 1


async def test_the_collector_publishes_where_participants_connect(client):
    await _running(client)
    published = {"runtime": "message", "server_address": "collector.fl.svc:9092", "server_ca": CA}
    task = (await client.put("/tasks/t1/status", json=published)).json()
    assert {k: task[k] for k in published} == published
    for bad in ({"server_address": "no-port"}, {"server_ca": "-----BEGIN PRIVATE KEY-----"}, {"runtime": "grpc"}):
        assert (await client.put("/tasks/t1/status", json=bad)).status_code == 422, bad


async def test_condition_types_say_what_happened(client):
    await _running(client)
    await client.put("/tasks/t1/status", json={"reason": "Resumed", "message": "after round 1"})
    task = (await client.put("/tasks/t1/status", json={"phase": "Succeeded", "reason": "TrainingComplete"})).json()
    assert [(c["type"], c["reason"]) for c in task["conditions"]] == [
        ("Training", "ServerStarted"),
        ("Training", "Resumed"),
        ("Completed", "TrainingComplete"),
    ]
    assert all(c["status"] == "True" and c["last_transition_time"] for c in task["conditions"])


async def test_cancel_ends_a_running_or_pending_task_once(client):
    await _running(client)
    r = await client.post("/tasks/t1/cancel", json={"message": "wrong data set"})
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["phase"] == "Failed" and task["completion_time"]
    assert (task["conditions"][-1]["type"], task["conditions"][-1]["reason"]) == ("Failed", "Cancelled")
    assert task["conditions"][-1]["message"] == "cancelled by anonymous: wrong data set"
    r = await client.post("/tasks/t1/cancel")
    assert r.status_code == 409 and "nothing to cancel" in r.json()["detail"]
    # The collector's next heartbeat is refused: that is how it learns it must stop.
    assert (await client.put("/tasks/t1/status", json={"current_round": 1})).status_code == 409
    assert (await client.delete("/tasks/t1")).status_code == 204

    await client.post("/tasks", json={**PLAN, "task_id": "t2"})
    task = (await client.post("/tasks/t2/cancel")).json()  # no body: still fine
    assert task["phase"] == "Failed" and task["conditions"][-1]["message"] == "cancelled by anonymous"
    assert (await client.post("/tasks/nope/cancel")).status_code == 404


async def test_a_running_task_cannot_be_deleted_but_says_how_to_end_it(client):
    await _running(client)
    r = await client.delete("/tasks/t1")
    assert r.status_code == 409 and "/tasks/t1/cancel" in r.json()["detail"]


async def test_a_silent_collector_fails_its_task_after_its_heartbeat_timeout(app, client):
    task = await _running(client, heartbeat_timeout=30)
    db = app.state.db
    last = datetime.fromisoformat(task["heartbeat"]["time"])
    assert await fail_lost_collectors(db, last + timedelta(seconds=29)) == []
    assert (await client.get("/tasks/t1")).json()["phase"] == "Running"
    assert await fail_lost_collectors(db, last + timedelta(seconds=31)) == ["t1"]
    task = (await client.get("/tasks/t1")).json()
    assert task["phase"] == "Failed" and task["completion_time"]
    condition = task["conditions"][-1]
    assert (condition["type"], condition["reason"]) == ("Failed", "CollectorLost")
    assert "h:1" in condition["message"] and "heartbeat_timeout 30 s" in condition["message"]
    assert await fail_lost_collectors(db, last + timedelta(seconds=60)) == []  # once only


async def test_a_collector_that_reports_again_keeps_its_task(app, client):
    await _running(client, heartbeat_timeout=30)
    # Restarted within the timeout, it resumes: its report is a fresh heartbeat.
    resumed = {"reason": "Resumed", "resumed_from_round": 1, "current_round": 1}
    task = (await client.put("/tasks/t1/status", json=resumed)).json()
    later = datetime.fromisoformat(task["heartbeat"]["time"]) + timedelta(seconds=20)
    assert await fail_lost_collectors(app.state.db, later) == []
    task = (await client.get("/tasks/t1")).json()
    assert task["phase"] == "Running" and task["resumed_from_round"] == 1


async def test_several_replicas_checking_at_once_fail_a_task_once(app, client):
    task = await _running(client, heartbeat_timeout=5)
    later = datetime.fromisoformat(task["heartbeat"]["time"]) + timedelta(seconds=10)
    results = await asyncio.gather(*(fail_lost_collectors(app.state.db, later) for _ in range(4)))
    assert sorted(map(len, results)) == [0, 0, 0, 1]
    task = (await client.get("/tasks/t1")).json()
    assert [c["reason"] for c in task["conditions"]] == ["ServerStarted", "CollectorLost"]


async def test_tasks_from_before_heartbeats_fall_back_to_their_last_update(app, client):
    await _running(client)
    await app.state.db.collection("tasks").update_one(
        {"task_id": "t1"}, {"$unset": {"heartbeat": "", "heartbeat_timeout": ""}}
    )
    now = datetime.now(UTC)
    assert await fail_lost_collectors(app.state.db, now + timedelta(seconds=50)) == []
    assert await fail_lost_collectors(app.state.db, now + timedelta(seconds=70)) == ["t1"]  # default 60 s


async def test_the_service_checks_by_itself(mongo_url):
    settings = make_settings(mongo_url, task_check_interval_s=0.5)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://flrepo.test") as client:
                await _running(client, heartbeat_timeout=5)
                started = time.monotonic()
                while (task := (await client.get("/tasks/t1")).json())["phase"] == "Running":
                    assert time.monotonic() - started < 5 + 10, "not failed within heartbeat_timeout + 10 s"
                    await asyncio.sleep(0.2)
                assert task["conditions"][-1]["reason"] == "CollectorLost"
                assert time.monotonic() - started >= 4  # not before its timeout
    finally:
        drop(settings)


async def test_a_report_holds_what_the_store_cannot_hold_to_its_rules(app, client):
    """Only what a report adds is checked against the store's rules (the rest was read from the store)."""
    await _running(client)
    for n in range(1, 4):
        r = await client.put("/tasks/t1/status", json={"round": {"round": n}, "reason": "Progress"})
        assert r.status_code == 200, r.text
    settings = {"grid": [[1, 2], [3, 4]]}
    r = await client.put("/tasks/t1/status", json={"current_round": 4, "strategy_settings": settings})
    task = (await client.get("/tasks/t1")).json()
    if app.state.db.dialect.nested_arrays:  # MongoDB
        assert r.status_code == 200 and task["strategy_settings"] == settings, r.text
    else:  # FerretDB: refused before anything is written
        assert r.status_code == 422 and "arrays directly inside arrays" in r.json()["detail"], r.text
        assert task["current_round"] == 0 and task["strategy_settings"] is None
    assert [h["round"] for h in task["history"]] == [1, 2, 3]


async def test_a_report_answers_with_as_many_round_records_as_asked(client):
    await _running(client)
    for n in (1, 2, 3):
        record = {"round": n, "loss": 1.0 / n}
        r = await client.put("/tasks/t1/status", json={"current_round": n, "round": record, "collector": "h:1"})
        assert r.status_code == 200 and [h["round"] for h in r.json()["history"]] == list(range(1, n + 1))
    lean = await client.put("/tasks/t1/status?history=0", json={"active": 3, "collector": "h:1"})
    assert lean.status_code == 200, lean.text
    assert lean.json()["history"] == [] and lean.json()["history_total"] == 3 and lean.json()["active"] == 3
    one = (await client.put("/tasks/t1/status?history=1", json={"active": 2, "collector": "h:1"})).json()
    assert [h["round"] for h in one["history"]] == [3]
    assert (await client.put("/tasks/t1/status?history=-1", json={"active": 1})).status_code == 422
    assert [h["round"] for h in (await client.get("/tasks/t1")).json()["history"]] == [1, 2, 3]  # nothing lost
