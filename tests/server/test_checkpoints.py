"""A task's checkpoints: registered per round, bounded (newest kept plus the best), the task's
`best` following the lowest loss, downloadable, gone with their task."""

from __future__ import annotations

import asyncio

from tests.helpers import PLAN, grid_counts, make_task_references, payload, upload


async def _running_task(client, **plan):
    await make_task_references(client)
    assert (await client.post("/tasks", json={**PLAN, **plan})).status_code == 201
    assert (await client.put("/tasks/t1/status", json={"phase": "Running"})).status_code == 200


async def _checkpoint(client, round_number, loss, data):
    body = {"round": round_number, "loss": loss, "metrics": {"accuracy": 1 - loss}}
    r = await client.post("/tasks/t1/checkpoints", json=body)
    assert r.status_code == 201, r.text
    assert (await upload(client, f"/tasks/t1/checkpoints/{round_number}", data, "w.npz")).status_code == 204


async def test_newest_and_best_are_kept_and_best_follows_the_loss(client, raw_db):
    await _running_task(client, checkpoints_kept=2)
    files = {}
    for round_number, loss in zip(range(1, 6), (1.0, 0.4, 0.7, 0.6, 0.8), strict=True):
        files[round_number] = payload(1000 + round_number)
        await _checkpoint(client, round_number, loss, files[round_number])
    listed = await client.get("/tasks/t1/checkpoints")
    assert [c["round"] for c in listed.json()] == [2, 4, 5] and listed.headers["x-total-count"] == "3"
    assert all(c["size"] == len(files[c["round"]]) for c in listed.json())
    task = (await client.get("/tasks/t1")).json()
    assert task["best"] == {"round": 2, "loss": 0.4, "metrics": {"accuracy": 0.6}}
    assert (await client.get("/tasks/t1/checkpoints/2")).content == files[2]
    assert (await client.get("/tasks/t1/checkpoints/1")).status_code == 404  # pruned, its file with it
    assert grid_counts(raw_db)[0] == 3 + 2  # three checkpoints, the strategy's and the transformation's files


async def test_duplicates_unknown_tasks_and_finished_tasks_are_refused(client):
    await _running_task(client)
    await _checkpoint(client, 1, 0.5, b"x")
    assert (await client.post("/tasks/t1/checkpoints", json={"round": 1})).status_code == 409
    assert (await client.post("/tasks/nope/checkpoints", json={"round": 1})).status_code == 404
    assert (await client.get("/tasks/nope/checkpoints")).status_code == 404
    assert (await upload(client, "/tasks/t1/checkpoints/7", b"x")).status_code == 404  # not registered
    assert (await client.post("/tasks/t1/checkpoints", json={"round": 0})).status_code == 422
    await client.put("/tasks/t1/status", json={"phase": "Failed", "reason": "Test"})
    r = await client.post("/tasks/t1/checkpoints", json={"round": 2})
    assert r.status_code == 409 and "Failed" in r.json()["detail"]


async def test_deleting_a_task_deletes_its_checkpoints_and_their_files(client, raw_db):
    await _running_task(client)
    for round_number in (1, 2):
        await _checkpoint(client, round_number, 1.0 / round_number, payload(300))
    files_before = grid_counts(raw_db)[0]
    await client.put("/tasks/t1/status", json={"phase": "Failed"})
    assert (await client.delete("/tasks/t1")).status_code == 204
    assert grid_counts(raw_db)[0] == files_before - 2
    assert raw_db[0]["checkpoints"].count_documents({"task_id": "t1"}) == 0


async def test_a_checkpoint_racing_a_cancel_does_not_bring_the_task_back(app, client):
    # Where the store rewrites the whole document on an update (FerretDB), an unserialised `best`
    # update read before a cancel and written after it put the task back to Running; its collector's
    # next report then turned a cancelled task into a Succeeded one.
    from flrepo.server.repository import checkpoints, tasks

    await _running_task(client)
    db = app.state.db
    for attempt in range(20):
        if attempt:
            assert (await client.delete("/tasks/t1")).status_code == 204
            assert (await client.post("/tasks", json=PLAN)).status_code == 201
            assert (await client.put("/tasks/t1/status", json={"phase": "Running"})).status_code == 200
        losses = [1.0 / (k + 1) for k in range(8)]
        racers = [checkpoints._better(db, "t1", k + 1, loss, {}) for k, loss in enumerate(losses)]
        cancel = tasks.cancel(db, "t1", "enough", keep_rounds=100, record_bytes=1 << 16)
        await asyncio.gather(*racers[:4], cancel, *racers[4:])
        task = (await client.get("/tasks/t1")).json()
        assert task["phase"] == "Failed", f"attempt {attempt}: {task['phase']}"
        assert task["best"]["loss"] == min(losses)
