"""A task's history is bounded (rounds kept, bytes per record) and paged; lists stay small."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.helpers import make_task


async def _start(client, task_id="t1"):
    await make_task(client, task_id)
    assert (await client.put(f"/tasks/{task_id}/status", json={"phase": "Running"})).status_code == 200


async def _round(client, n: int, task_id="t1", **metrics):
    return await client.put(
        f"/tasks/{task_id}/status",
        json={"current_round": n, "round": {"round": n, "loss": 1.0 / n, "metrics": metrics}},
    )


async def test_a_megabyte_round_record_is_refused(client, raw_db):
    """The reproduction: 21 status updates of 1 MB made a 20 MB task that every GET returned."""
    await _start(client)
    for n in range(1, 22):
        r = await _round(client, n, blob="x" * 1_000_000)
        assert r.status_code == 413, r.text
    task = (await client.get("/tasks/t1")).json()
    assert task["history"] == [] and task["history_total"] == 0 and task["current_round"] == 0
    # Just under the limit is accepted; the limit is a setting.
    assert (await _round(client, 1, blob="x" * 7000)).status_code == 200
    assert len(str(raw_db[0]["tasks"].find_one({"task_id": "t1"}))) < 20_000


async def test_rounds_kept_are_bounded_and_paged(client, app, raw_db):
    app.state.settings.task_history_rounds = 5
    app.state.settings.task_record_bytes = 2048
    await _start(client)
    for n in range(1, 13):
        r = await _round(client, n, note="y" * 1500)
        assert r.status_code == 200, r.text
        assert r.json()["history"][-1]["round"] == n and r.json()["history_total"] == min(n, 5)
    # Round records are documents of their own (issue 28): the task document does not grow with them.
    kept = raw_db[0]["task_rounds"].find({"task_id": "t1"}).sort("seq", 1)
    assert [h["round"] for h in kept] == [8, 9, 10, 11, 12]
    stored = raw_db[0]["tasks"].find_one({"task_id": "t1"})
    assert "history" not in stored and [h["round"] for h in stored["recent_rounds"]] == [8, 9, 10, 11, 12]
    assert len(str(stored)) < 5 * 2048 + 4096  # the document cannot grow with the rounds run

    task = (await client.get("/tasks/t1")).json()
    assert [h["round"] for h in task["history"]] == [8, 9, 10, 11, 12] and task["current_round"] == 12
    task = (await client.get("/tasks/t1", params={"history": 2})).json()
    assert [h["round"] for h in task["history"]] == [11, 12] and task["history_total"] == 5
    r = await client.get("/tasks/t1/history", params={"limit": 2, "offset": 1})
    assert r.status_code == 200 and r.headers["x-total-count"] == "5"
    assert [h["round"] for h in r.json()] == [9, 10]
    assert (await client.get("/tasks/nope/history")).status_code == 404


async def test_lists_carry_no_history_unless_asked(client, app):
    await _start(client)
    for n in range(1, 4):
        await _round(client, n)
    listed = (await client.get("/tasks")).json()
    assert listed[0]["history"] == [] and listed[0]["current_round"] == 3
    listed = (await client.get("/tasks", params={"history": 1})).json()
    assert [h["round"] for h in listed[0]["history"]] == [3] and listed[0]["history_total"] == 3


async def test_concurrent_reports_all_land(client):
    import asyncio

    await _start(client)
    responses = await asyncio.gather(*(_round(client, n) for n in range(1, 9)))
    assert all(r.status_code == 200 for r in responses)
    task = (await client.get("/tasks/t1")).json()
    assert sorted(h["round"] for h in task["history"]) == list(range(1, 9))


async def test_records_kept_in_the_task_by_earlier_versions_move_to_their_collection(client, raw_db):
    await _start(client)
    legacy = [{"round": n, "loss": 1.0, "metrics": {}, "participants": 0, "failures": 0} for n in (1, 2)]
    # Written as an earlier version's report wrote them: with a new updated_at, as every write of a task does.
    earlier = {"history": legacy, "history_total": 2, "updated_at": datetime.now(UTC)}
    raw_db[0]["tasks"].update_one({"task_id": "t1"}, {"$set": earlier})
    assert [h["round"] for h in (await client.get("/tasks/t1")).json()["history"]] == [1, 2]  # shown as stored
    assert (await _round(client, 3)).status_code == 200
    task = (await client.get("/tasks/t1")).json()
    assert [h["round"] for h in task["history"]] == [1, 2, 3] and task["history_total"] == 3
    assert "history" not in raw_db[0]["tasks"].find_one({"task_id": "t1"})
    assert [h["round"] for h in (await client.get("/tasks/t1/history")).json()] == [1, 2, 3]


async def test_several_rounds_in_one_report_are_appended_in_order(client, app, raw_db):
    """A collector whose rounds end faster than it writes reports them together (flrepo.fl.core.round_writes)."""
    app.state.settings.task_history_rounds = 4
    app.state.settings.task_record_bytes = 2048
    await _start(client)
    assert (await _round(client, 1)).status_code == 200
    records = [{"round": n, "loss": 1.0 / n, "metrics": {}} for n in (2, 3, 4)]
    r = await client.put(
        "/tasks/t1/status", json={"current_round": 5, "round_records": records, "round": {"round": 5, "loss": 0.2}}
    )
    assert r.status_code == 200, r.text
    assert [h["round"] for h in r.json()["history"]] == [2, 3, 4, 5] and r.json()["history_total"] == 4
    kept = raw_db[0]["task_rounds"].find({"task_id": "t1"}).sort("seq", 1)
    assert [h["round"] for h in kept] == [2, 3, 4, 5]  # round 1 fell out of the four kept
    r = await client.put("/tasks/t1/status", json={"round_records": [{"round": 6}, {"round": 7}]})
    assert r.status_code == 200 and [h["round"] for h in r.json()["history"]] == [4, 5, 6, 7]
    # Every record is held to the per-record bound; nothing of a refused report lands.
    big = [{"round": 8, "metrics": {}}, {"round": 9, "metrics": {"note": "x" * 4000}}]
    r = await client.put("/tasks/t1/status", json={"current_round": 9, "round_records": big})
    assert r.status_code == 413 and "round record" in r.json()["detail"]
    task = (await client.get("/tasks/t1")).json()
    assert [h["round"] for h in task["history"]] == [4, 5, 6, 7] and task["current_round"] == 5
    assert (await client.put("/tasks/t1/status", json={"round_records": [{"round": 0}]})).status_code == 422


async def test_round_records_are_stored_without_unset_fields_and_shown_with_them(client, raw_db):
    """What a round leaves unset (None) is not stored, in the task or beside it, yet every answer shows it."""
    await _start(client)
    r = await client.put("/tasks/t1/status", json={"round": {"round": 1, "loss": 0.5, "epsilon": 0.25}})
    assert r.status_code == 200, r.text
    shown = r.json()["history"][-1]
    assert shown["bytes_up"] is None and shown["duration_s"] is None and shown["epsilon"] == 0.25
    assert shown["participants"] == 0 and shown["metrics"] == {}
    stored = raw_db[0]["tasks"].find_one({"task_id": "t1"})["recent_rounds"][-1]
    kept = raw_db[0]["task_rounds"].find_one({"task_id": "t1", "seq": 1}, {"_id": 0, "task_id": 0, "seq": 0})
    assert stored == kept and "bytes_up" not in stored and stored["epsilon"] == 0.25
    assert (await client.get("/tasks/t1")).json()["history"] == [shown]
    assert (await client.get("/tasks/t1/history")).json() == [shown]
