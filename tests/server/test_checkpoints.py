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


async def test_one_upload_registers_the_checkpoint_and_stores_its_file(client, raw_db):
    await _running_task(client)
    data = payload(2000)
    metrics = '{"accuracy":0.75}'
    r = await upload(client, f"/tasks/t1/checkpoints/1?register=true&loss=0.25&metrics={metrics}", data, "w.npz")
    assert r.status_code == 204, r.text
    (listed,) = (await client.get("/tasks/t1/checkpoints")).json()
    assert (listed["round"], listed["loss"], listed["metrics"], listed["size"]) == (1, 0.25, {"accuracy": 0.75}, 2000)
    assert (await client.get("/tasks/t1")).json()["best"] == {"round": 1, "loss": 0.25, "metrics": {"accuracy": 0.75}}
    assert (await client.get("/tasks/t1/checkpoints/1")).content == data
    # The same checks as POST's: once only, rounds reached only, while the task runs.
    again = await upload(client, "/tasks/t1/checkpoints/1?register=true&loss=0.1", b"y")
    assert again.status_code == 409 and "immutable" in again.json()["detail"]
    assert (await client.get("/tasks/t1/checkpoints/1")).content == data
    assert (await upload(client, "/tasks/nope/checkpoints/1?register=true", b"z")).status_code == 404
    await client.put("/tasks/t1/status", json={"phase": "Failed", "reason": "Test"})
    ended = await upload(client, "/tasks/t1/checkpoints/2?register=true", b"z")
    assert ended.status_code == 409 and "Failed" in ended.json()["detail"]
    assert [c["round"] for c in (await client.get("/tasks/t1/checkpoints")).json()] == [1]


async def test_a_registering_upload_with_bad_metrics_is_422_and_leaves_nothing(client, raw_db):
    await _running_task(client)
    files_before = grid_counts(raw_db)[0]
    nested = "metrics=%7B%22a%22%3A%7B%22b%22%3A1%7D%7D"
    deep = "metrics=" + "%5B" * 2000 + "%5D" * 2000  # past the JSON parser's depth
    for query in ("metrics=%7Bnot-json", "metrics=%5B1%2C2%5D", nested, "loss=inf", deep):
        r = await upload(client, f"/tasks/t1/checkpoints/1?register=true&{query}", b"x")
        assert r.status_code == 422 and isinstance(r.json()["detail"], list), (query, r.text)
        assert r.json()["detail"][0]["loc"][0] == "query", r.text
    too_long = "metrics=" + "%20" * 5000
    assert (await upload(client, f"/tasks/t1/checkpoints/1?register=true&{too_long}", b"x")).status_code == 422
    assert (await client.get("/tasks/t1/checkpoints")).json() == [] and grid_counts(raw_db)[0] == files_before


async def test_a_registering_upload_that_fails_leaves_no_checkpoint_without_its_file(app, client):
    await _running_task(client)
    app.state.settings.max_upload_bytes = 10  # the upload is refused as too large once read
    r = await upload(client, "/tasks/t1/checkpoints/1?register=true&loss=0.5", payload(1000))
    assert r.status_code == 413, r.text
    assert (await client.get("/tasks/t1/checkpoints")).json() == []
