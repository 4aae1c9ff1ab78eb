"""flrepo's own bodies refuse unknown fields, each named with the field it probably meant; aerOS's
bodies stay lenient; tasks stored with fields refused today still load; a task shows every setting."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from flrepo.schemas import (
    CollectorIn,
    ModelIn,
    StrategyIn,
    StrategyMetaIn,
    TrainingResultIn,
    TransformationIn,
    TransformationUpdate,
)
from flrepo.schemas.strict import StrictBody
from flrepo.schemas.tasks import TaskIn
from tests.helpers import PLAN, make_task, make_task_references

# aerOS clients send their whole documents back with extra id fields: these bodies stay lenient.
AEROS_BODIES = {
    CollectorIn,
    ModelIn,
    StrategyIn,
    StrategyMetaIn,
    TrainingResultIn,
    TransformationIn,
    TransformationUpdate,
}


def unknown(response: Any) -> dict[str, dict[str, Any]]:
    """The 422's unknown fields, by their path (without "body")."""
    assert response.status_code == 422, response.text
    errors = [e for e in response.json()["detail"] if e["type"] == "extra_forbidden"]
    return {".".join(str(p) for p in e["loc"][1:]): e for e in errors}


def _subclasses(cls: type) -> set[type]:
    return {cls, *(c for sub in cls.__subclasses__() for c in _subclasses(sub))}


async def test_every_json_body_is_strict_unless_it_is_aeros(client):
    """A body added later must choose: derive from StrictBody, or be an aerOS body listed here. The
    OpenAPI document says which (`additionalProperties: false`)."""
    spec = (await client.get("/openapi.json")).json()
    refs = [
        op["requestBody"]["content"]["application/json"]["schema"]
        for path in spec["paths"].values()
        for op in path.values()
        if isinstance(op, dict) and "application/json" in op.get("requestBody", {}).get("content", {})
    ]
    names = {ref.get("$ref", "").rsplit("/", 1)[-1] for ref in refs} | {
        alt["$ref"].rsplit("/", 1)[-1] for ref in refs for alt in ref.get("anyOf", []) if "$ref" in alt
    }
    names.discard("")
    strict = {cls.__name__ for cls in _subclasses(StrictBody)}
    aeros = {cls.__name__ for cls in AEROS_BODIES}
    assert {"TaskIn", "StatusUpdate", "CancelIn", "CheckpointIn"} <= names
    assert names - strict - aeros == set(), "bodies neither strict nor aerOS"
    assert aeros <= names
    for name in names & strict:
        assert spec["components"]["schemas"][name].get("additionalProperties") is False, name
    for name in aeros:
        assert spec["components"]["schemas"][name].get("additionalProperties") is not False, name


async def test_a_task_with_misspelt_and_unknown_fields_is_422_naming_each(client):
    await make_task_references(client)
    body = {**PLAN, "round_timout": 5, "min_participant": 2, "quantization": {"bits": 8}}
    found = unknown(await client.post("/tasks", json=body))
    assert set(found) == {"round_timout", "min_participant", "quantization"}
    assert found["round_timout"]["ctx"]["suggestion"] == "round_timeout"
    assert "did you mean 'round_timeout'?" in found["round_timout"]["msg"]
    assert found["min_participant"]["ctx"]["suggestion"] == "min_participants"
    assert found["quantization"]["msg"] == "unknown field 'quantization'"  # nothing close: no guess
    assert (await client.get("/tasks/t1")).status_code == 404  # nothing was created


async def test_unknown_fields_inside_a_task_are_named_by_their_path(client):
    await make_task_references(client)
    body = {
        **PLAN,
        "model": {**PLAN["model"], "model_id": "x"},
        "transformations": [{"id": "scale", "paramters": {}}],
        "training": {"epocs": 2},
    }
    found = unknown(await client.post("/tasks", json=body))
    assert set(found) == {"model.model_id", "transformations.0.paramters", "training.epocs"}
    assert found["transformations.0.paramters"]["ctx"]["suggestion"] == "parameters"
    assert found["training.epocs"]["ctx"]["suggestion"] == "epochs"


@pytest.mark.parametrize(
    ("body", "field", "meant"),
    [
        ({"curent_round": 1}, "curent_round", "current_round"),
        ({"round": {"round": 1, "los": 0.5}}, "round.los", "loss"),
        ({"participants": [{"node_id": "n", "sample": 3}]}, "participants.0.sample", "samples"),
        ({"phase": "Running", "heartbeat": 1}, "heartbeat", None),
    ],
)
async def test_status_reports_and_heartbeats_refuse_unknown_fields(client, body, field, meant):
    await make_task(client)
    found = unknown(await client.put("/tasks/t1/status", json=body))
    assert set(found) == {field} and found[field]["ctx"].get("suggestion") == meant
    assert (await client.get("/tasks/t1")).json()["current_round"] == 0  # nothing was applied


async def test_cancel_and_checkpoint_bodies_refuse_unknown_fields(client):
    await make_task(client)
    found = unknown(await client.post("/tasks/t1/cancel", json={"mesage": "stop"}))
    assert found["mesage"]["ctx"]["suggestion"] == "message"
    assert (await client.get("/tasks/t1")).json()["phase"] == "Pending"
    await client.put("/tasks/t1/status", json={"phase": "Running"})
    found = unknown(await client.post("/tasks/t1/checkpoints", json={"round": 1, "los": 0.4}))
    assert found["los"]["ctx"]["suggestion"] == "loss"
    ok = await client.post("/tasks/t1/checkpoints", json={"round": 1, "loss": 0.4})
    assert ok.status_code == 201, ok.text


async def test_tus_metadata_refuses_keys_it_does_not_read(client):
    def pair(key: str, value: str) -> str:
        return f"{key} {base64.b64encode(value.encode()).decode()}"

    metadata = ",".join([pair("target", "/model/m/v1"), pair("filname", "m.bin"), pair("colour", "red")])
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": "3", "Upload-Metadata": metadata}
    r = await client.post("/uploads/", headers=headers)
    assert r.status_code == 422, r.text
    found = {e["loc"][-1]: e for e in r.json()["detail"]}
    assert set(found) == {"filname", "colour"} and found["filname"]["ctx"]["suggestion"] == "filename"
    assert "suggestion" not in found["colour"]["ctx"]


async def test_aeros_bodies_keep_accepting_the_extra_fields_aeros_clients_send(client):
    model = {"model_name": "m", "model_version": "v1", "meta": {"library": "keras"}, "model_id": None, "_id": "x"}
    assert (await client.post("/model", json=model)).status_code == 201
    result = {
        "model_name": "m",
        "model_version": "v1",
        "training_id": "1",
        "configuration_id": "1",
        "results": {"rounds": "3"},
        "weights_id": None,
    }
    assert (await client.post("/training-results", json=result)).status_code == 201
    strategy = {"strategy_name": "s", "meta": {}, "strategy_id": None, "strategy_description": None}
    assert (await client.post("/strategy", json=strategy)).status_code == 201
    assert (await client.put("/strategy/meta/s", json={"meta": {"a": 1}, "strategy_id": None})).status_code == 204
    needs = {"storage": 0, "RAM": 0, "GPU": False, "preinstalled_libraries": {}, "available_models": {}}
    transformation = {
        "id": "t.x",
        "parameter_types": {},
        "default_values": {},
        "outputs": [],
        "needs": needs,
        "storage_id": None,
    }
    assert (await client.post("/transformation", json=transformation)).status_code == 201
    assert (await client.put("/transformation/meta/t.x", json=transformation)).status_code == 204
    collector = {"name": "c", "version": 1, "meta": {}, "collector_id": None}
    assert (await client.post("/collector", json=collector)).status_code == 201


async def test_a_task_shows_every_setting_in_force_with_defaults(client):
    await make_task_references(client)
    minimal = {"task_id": "t1", "model": PLAN["model"], "strategy": PLAN["strategy"]}
    assert (await client.post("/tasks", json=minimal)).status_code == 201
    task = (await client.get("/tasks/t1")).json()
    defaults = TaskIn.model_validate(minimal).model_dump(mode="json")
    assert set(TaskIn.model_fields) <= set(task)
    shown = {name: task[name] for name in TaskIn.model_fields}
    assert shown == {**defaults, "output_model_version": "v1-t1"}
    assert task["training"] == {"epochs": 1, "batch_size": 32, "learning_rate": None, "optimizer": None, "loss": None}
    assert (task["rounds"], task["heartbeat_timeout"], task["participants_timeout"]) == (3, 60.0, 300)


async def test_a_task_stored_with_fields_refused_today_loads_and_is_logged_once(client, raw_db, caplog):
    await make_task(client)
    raw_db[0]["tasks"].update_one(
        {"task_id": "t1"},
        {
            "$set": {
                "round_timout": 5,
                "model.model_id": "old",
                "participants": [{"node_id": "n1", "samples": 3, "shard": 2}],
            }
        },
    )
    caplog.set_level(logging.WARNING, logger="flrepo.server.routes.tasks")
    first = await client.get("/tasks/t1")
    assert first.status_code == 200, first.text
    task = first.json()
    assert "round_timout" not in task and task["model"] == PLAN["model"]
    assert task["participants"] == [{"node_id": "n1", "samples": 3, "last_round": 0, "metrics": {}}]
    listed = await client.get("/tasks")
    assert listed.status_code == 200 and [t["task_id"] for t in listed.json()] == ["t1"]
    warnings = [r.getMessage() for r in caplog.records if "t1" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert all(name in warnings[0] for name in ("round_timout", "model.model_id", "participants[0].shard"))
