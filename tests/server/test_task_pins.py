"""A task pins the sha256 of the model, strategy and transformations it was created with, and shows them."""

from __future__ import annotations

from tests.helpers import make_task, sha, upload


async def test_creation_pins_every_file_and_the_status_shows_it(client):
    task = await make_task(client, "t1", transformations=[{"id": "scale"}, {"id": "scale", "parameters": {"k": 1}}])
    pins = task["pins"]
    assert pins["model"] == {"sha256": sha(b"model bytes"), "size": len(b"model bytes")}
    assert pins["strategy"]["sha256"] == sha(b"pickled strategy")
    assert pins["transformations"] == [
        {"id": "scale", "sha256": sha(b"pickled transformation"), "size": len(b"pickled transformation")}
    ]
    # Replacing a file later changes nothing the task pinned.
    await upload(client, "/strategy/fedavg", b"another strategy")
    shown = (await client.get("/tasks/t1")).json()
    assert shown["pins"] == pins
    assert (await client.get("/strategy/meta/fedavg")).json()["sha256"] == sha(b"another strategy")


async def test_a_model_without_a_file_is_pinned_as_none(client):
    await make_task(client, "seed-refs")  # creates the strategy and transformation with files
    r = await client.post("/model", json={"model_name": "fresh", "model_version": "v1", "meta": {"library": "x"}})
    assert r.status_code == 201
    plan = {
        "task_id": "t2",
        "model": {"model_name": "fresh", "model_version": "v1"},
        "strategy": {"strategy_name": "fedavg"},
    }
    task = (await client.post("/tasks", json=plan)).json()
    assert task["pins"]["model"] == {"sha256": None, "size": None} and task["pins"]["transformations"] == []


async def test_pins_cannot_be_sent_by_the_creator(client):
    await make_task(client, "seed-refs")
    plan = {
        "task_id": "t3",
        "model": {"model_name": "digits", "model_version": "v1"},
        "strategy": {"strategy_name": "fedavg"},
        "pins": {"model": {"sha256": "0" * 64}, "strategy": {"sha256": "0" * 64}},
    }
    refused = await client.post("/tasks", json=plan)  # pins are the service's to record: an unknown field
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "pins"], refused.text
    task = (await client.post("/tasks", json={k: v for k, v in plan.items() if k != "pins"})).json()
    assert task["pins"]["strategy"]["sha256"] == sha(b"pickled strategy")


async def test_files_without_a_recorded_digest_are_pinned_from_their_bytes(client, raw_db):
    """Items restored from aerOS carry no sha256: the pin is computed from what is stored."""
    await make_task(client, "seed-refs")
    raw_db[0]["strategies"].update_one({"strategy_name": "fedavg"}, {"$unset": {"sha256": ""}})
    raw_db[1]["fs.files"].update_many({}, {"$unset": {"sha256": ""}})
    task = await make_task(client, "t4")
    assert task["pins"]["strategy"]["sha256"] == sha(b"pickled strategy")
