"""Task documents stay bounded however long a collector reports (conditions coalesce by type, reports are
bounded as a whole, the history keeps its newest rounds), and the liveness check survives a task it cannot
update (issue 28). Latency over many reports is measured by bench/task_reports.py, not asserted here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bson
import httpx
from pymongo import MongoClient

from flrepo.server.repository.liveness import fail_lost_collectors
from flrepo.server.repository.tasks import CONDITIONS_TAIL
from tests.helpers import PLAN, create_app, drop, make_settings, make_task_references

REASONED = {"reason": "Progress", "message": "m" * 2000}


def _size(raw_db, task_id: str) -> int:
    meta, _ = raw_db
    return len(bson.encode(meta["tasks"].find_one({"task_id": task_id})))


# The history's cap, and reports to ten times it (what is bounded is the growth past the cap, not the count:
# 1,000 reports over a cap of 100 were ~30 s of requests on a busy machine for the same claim).
CAP = 20
REPORTS = 10 * CAP


async def test_reports_ten_times_past_the_history_cap_leave_the_task_under_a_fixed_bound(mongo_url):
    settings = make_settings(mongo_url, task_history_rounds=CAP)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                with MongoClient(settings.mongodb_url) as raw:
                    sizes = await _report_many_times(client, (raw[settings.db_name], None))
                task = (await client.get("/tasks/t1", params={"history": 0})).json()
    finally:
        drop(settings)
    assert len(task["conditions"]) <= CONDITIONS_TAIL + 4  # the tail, plus the latest of each other type
    assert task["history_total"] == CAP and task["conditions"][-1]["message"] == REASONED["message"]
    # Once the history is full nothing grows: the size after all the reports is the size at the cap.
    assert sizes[REPORTS] <= sizes[CAP] + 1024, sizes
    # The fixed bound: conditions (the tail and one per type, each at most ~2.3 KB), the kept round
    # records (small here) and the plan with one of each replaced field.
    bound = (CONDITIONS_TAIL + 4) * 2_400 + CAP * 200 + 16_384
    assert sizes[REPORTS] < bound, (sizes, bound)


async def _report_many_times(client: httpx.AsyncClient, raw_db: tuple[object, object]) -> dict[int, int]:
    await make_task_references(client)
    assert (await client.post("/tasks", json={**PLAN, "rounds": 2000})).status_code == 201
    assert (await client.put("/tasks/t1/status", json={"phase": "Running"})).status_code == 200
    sizes = {}
    for n in range(1, REPORTS + 1):
        report = {**REASONED, "current_round": n, "round": {"round": n, "loss": 0.5, "metrics": {"acc": 0.9}}}
        r = await client.put("/tasks/t1/status", json=report)
        assert r.status_code == 200, r.text
        if n in (CAP, REPORTS // 2, REPORTS):
            sizes[n] = _size(raw_db, "t1")
    return sizes


async def test_a_report_is_bounded_as_a_whole(client, mongo_url):
    await make_task_references(client)
    assert (await client.post("/tasks", json=PLAN)).status_code == 201
    crowd = [{"node_id": f"node-{n}", "metrics": {f"m{k}": k for k in range(20)}} for n in range(2000)]
    r = await client.put("/tasks/t1/status", json={"phase": "Running", "participants": crowd})
    assert r.status_code == 413 and "FLREPO_TASK_REPORT_BYTES" in r.json()["detail"]
    assert (await client.get("/tasks/t1")).json()["phase"] == "Pending"  # nothing of it applied


async def test_the_liveness_check_survives_a_task_it_cannot_update(app, client, raw_db):
    await make_task_references(client)
    for task_id in ("broken", "lost"):
        plan = {**PLAN, "task_id": task_id, "output_model_version": f"out-{task_id}", "heartbeat_timeout": 5}
        assert (await client.post("/tasks", json=plan)).status_code == 201
        assert (await client.put(f"/tasks/{task_id}/status", json={"phase": "Running"})).status_code == 200
    meta, _ = raw_db
    # A document the check cannot update (as one past MongoDB's 16 MB limit would be): it is read first.
    meta["tasks"].update_one({"task_id": "broken"}, {"$set": {"conditions": 5}})
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert await fail_lost_collectors(app.state.db, later) == ["lost"]
    assert (await client.get("/tasks/lost")).json()["conditions"][-1]["reason"] == "CollectorLost"
    assert meta["tasks"].find_one({"task_id": "broken"})["phase"] == "Running"
