"""FL tasks: plan validation, phases and their transitions, live status, deletion rules."""

from __future__ import annotations

import asyncio

from tests.helpers import PLAN, make_model, make_task_references


async def test_create_pending_with_defaults(client):
    await make_task_references(client)
    r = await client.post("/tasks", json=PLAN)
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["phase"] == "Pending" and task["current_round"] == 0 and task["history"] == []
    training = {"epochs": 2, "batch_size": 32, "learning_rate": None, "optimizer": "sgd", "loss": None}
    assert task["training"] == training
    # Unset participant settings leave the strategy's own in force.
    assert task["participants_ratio"] is None and task["configuration_id"] == "1"
    assert (task["publish"], task["checkpoints_kept"], task["output_model_version"], task["best"]) == (
        "last",
        3,
        "v1-t1",
        None,
    )
    assert (await client.post("/tasks", json=PLAN)).status_code == 409
    generated = (await client.post("/tasks", json={k: v for k, v in PLAN.items() if k != "task_id"})).json()
    assert len(generated["task_id"]) == 32
    listed = await client.get("/tasks", params={"phase": "Pending"})
    assert listed.headers["x-total-count"] == "2"


async def test_unknown_training_settings_are_422_and_named(client):
    await make_task_references(client)
    for training, named in (({"epochs": 1, "momentum": 0.9}, "momentum"), ({"optimizer": "rmsprop"}, "optimizer")):
        r = await client.post("/tasks", json={**PLAN, "training": training})
        assert r.status_code == 422 and named in r.text, r.text


async def test_a_task_whose_trained_model_version_exists_is_409(client):
    await make_task_references(client)
    await make_model(client, "digits", "v1-t1")
    r = await client.post("/tasks", json=PLAN)
    assert r.status_code == 409 and "output_model_version" in r.json()["detail"]
    assert (await client.post("/tasks", json={**PLAN, "output_model_version": "trained"})).status_code == 201


async def test_missing_references_are_422_and_named(client):
    r = await client.post("/tasks", json=PLAN)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "model model_name='digits'" in detail and "strategy strategy_name='fedavg'" in detail
    assert "transformation id='scale'" in detail
    await make_model(client, "digits", "v1")
    await client.post("/strategy", json={"strategy_name": "fedavg"})
    r = await client.post("/tasks", json={**PLAN, "transformations": []})
    assert r.status_code == 422 and "the file of strategy" in r.json()["detail"]


async def test_invalid_plan_is_422(client):
    await make_task_references(client)
    for bad in ({"rounds": 0}, {"participants_ratio": 1.5}, {"min_participants": 0}, {"strategy_conf": {"$x": 1}}):
        assert (await client.post("/tasks", json={**PLAN, **bad})).status_code == 422, bad


async def test_lifecycle_and_status(client):
    await make_task_references(client)
    await client.post("/tasks", json=PLAN)
    r = await client.put("/tasks/t1/status", json={"phase": "Running", "message": "collector up"})
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["phase"] == "Running" and task["start_time"]
    assert task["conditions"][-1]["type"] == "Training" and task["conditions"][-1]["message"] == "collector up"
    assert (await client.delete("/tasks/t1")).status_code == 409

    for rnd in (1, 2):
        update = {
            "current_round": rnd,
            "participants": [
                {"node_id": "a", "samples": 100, "last_round": rnd, "metrics": {"accuracy": 0.5}},
                {"node_id": "b", "samples": 80, "last_round": rnd},
            ],
            "round": {"round": rnd, "loss": 1.0 / rnd, "metrics": {"accuracy": 0.4 + rnd / 10}, "participants": 2},
        }
        assert (await client.put("/tasks/t1/status", json=update)).status_code == 200
    task = (await client.get("/tasks/t1")).json()
    assert task["current_round"] == 2 and [h["round"] for h in task["history"]] == [1, 2]
    assert [p["samples"] for p in task["participants"]] == [100, 80]

    result = {"model_name": "digits", "model_version": "v1", "training_id": "t1", "output_model_version": "v1-t1"}
    r = await client.put("/tasks/t1/status", json={"phase": "Succeeded", "result": result})
    task = r.json()
    assert task["phase"] == "Succeeded" and task["completion_time"] and task["result"] == result
    assert [c["type"] for c in task["conditions"]] == ["Training", "Completed"]

    r = await client.put("/tasks/t1/status", json={"phase": "Running"})
    assert r.status_code == 409 and "Succeeded" in r.json()["detail"]
    assert (await client.put("/tasks/t1/status", json={"current_round": 9})).status_code == 409
    assert (await client.delete("/tasks/t1")).status_code == 204
    assert (await client.get("/tasks/t1")).status_code == 404
    assert (await client.delete("/tasks/t1")).status_code == 404


async def test_invalid_transitions(client):
    await make_task_references(client)
    await client.post("/tasks", json=PLAN)
    r = await client.put("/tasks/t1/status", json={"phase": "Succeeded"})
    assert r.status_code == 409
    r = await client.put("/tasks/t1/status", json={"phase": "Failed", "reason": "NoParticipants"})
    assert r.status_code == 200 and r.json()["conditions"][-1]["reason"] == "NoParticipants"
    assert (await client.put("/tasks/t1/status", json={"phase": "Running"})).status_code == 409
    assert (await client.put("/tasks/nope/status", json={"phase": "Running"})).status_code == 404
    assert (await client.put("/tasks/t1/status", json={"phase": "Exploded"})).status_code == 422


async def test_concurrent_start_only_one_transition(client):
    await make_task_references(client)
    await client.post("/tasks", json=PLAN)
    rs = await asyncio.gather(*(client.put("/tasks/t1/status", json={"phase": "Running"}) for _ in range(5)))
    assert all(r.status_code in (200, 409) for r in rs)
    task = (await client.get("/tasks/t1")).json()
    assert [c["type"] for c in task["conditions"]].count("Training") == 1
