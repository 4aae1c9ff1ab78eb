"""Bodies as aerOS 1.1.0 accepted them, where that is harmless; what it should have refused stays refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

MODEL = {"model_name": "base", "model_version": "v1", "meta": {"library": "keras"}}
RESULT = {"model_name": "base", "model_version": "v1", "training_id": "1", "configuration_id": "1", "results": {}}
STRATEGY = {"strategy_name": "fedavg", "strategy_description": None, "meta": {"k": "v"}}
TRANSFORMATION = {
    "id": "scale",
    "parameter_types": {"categories": "int"},
    "default_values": {"categories": 10},
    "outputs": ["np.ndarray"],
    "needs": {"storage": 0, "RAM": 0, "GPU": False, "preinstalled_libraries": {}, "available_models": {}},
}
COLLECTOR = {"name": "flower", "version": 1, "meta": {"framework": "flwr"}}


def _untyped(body: Any) -> bytes:
    """A JSON body as `requests.post(url, data=json.dumps(body))` sends it: no Content-Type."""
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/model", MODEL),
        ("/training-results", RESULT),
        ("/strategy", STRATEGY),
        ("/transformation", TRANSFORMATION),
        ("/collector", COLLECTOR),
    ],
)
async def test_json_without_content_type_is_parsed_as_json(client, path, body):
    r = await client.post(path, content=_untyped(body))
    assert r.status_code == 201, r.text
    listed = (await client.get(path)).json()
    assert len(listed) == 1 and all(listed[0][k] == v for k, v in body.items() if k not in ("needs", "meta"))


async def test_meta_updates_without_content_type(client):
    await client.post("/model", json=MODEL)
    await client.post("/strategy", json=STRATEGY)
    assert (await client.put("/model/meta/base/v1", content=_untyped({"library": "pytorch"}))).status_code == 204
    assert (await client.put("/strategy/meta/fedavg", content=_untyped({"meta": {"a": "b"}}))).status_code == 204
    assert (await client.get("/model/meta?model_name=base&model_version=v1")).json()["meta"]["library"] == "pytorch"
    assert (await client.get("/strategy/meta/fedavg")).json()["meta"] == {"a": "b"}


@pytest.mark.parametrize("header", [{"Origin": "https://elsewhere.example"}, {"Sec-Fetch-Site": "cross-site"}])
async def test_a_browser_must_still_say_content_type(client, header):
    # A page can send an untyped body cross-site without a CORS preflight: never read it as JSON.
    r = await client.post("/model", content=_untyped(MODEL), headers=header)
    assert r.status_code == 422
    assert (await client.get("/model")).json() == []
    r = await client.post("/model", json=MODEL, headers=header)  # with the type, as any page must send it
    assert r.status_code == 201


async def test_untyped_body_that_is_not_json_is_422(client):
    r = await client.post("/model", content=b"model_name=base&model_version=v1")
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


def test_requests_data_json_dumps_as_aeros_scripts_do(live_server):
    repo = live_server.url
    r = requests.post(f"{repo}/model", data=json.dumps(MODEL), timeout=10)
    assert r.status_code == 201, r.text
    assert "content-type" not in {k.lower() for k in r.request.headers}
    r = requests.put(f"{repo}/model/meta/base/v1", data=json.dumps({"library": "sklearn"}), timeout=10)
    assert r.status_code == 204
    r = requests.post(f"{repo}/training-results", data=json.dumps(RESULT), timeout=10)
    assert r.status_code == 201


async def test_meta_null_is_stored_and_returned_as_null(client, raw_db):
    r = await client.post("/model", json={**MODEL, "meta": None})
    assert r.status_code == 201 and r.json()["meta"] is None
    assert raw_db[0].models.find_one({"model_name": "base"})["meta"] is None
    assert (await client.get("/model/meta?model_name=base&model_version=v1")).json()["meta"] is None
    r = await client.post("/strategy", json={**STRATEGY, "meta": None})
    assert r.status_code == 201 and r.json()["meta"] is None
    assert raw_db[0].strategies.find_one({"strategy_name": "fedavg"})["meta"] is None
    # Absent strategy meta is the empty object, as before.
    assert (await client.post("/strategy", json={"strategy_name": "other"})).json()["meta"] == {}


async def test_configuration_id_and_results_null(client):
    r = await client.post("/training-results", json={**RESULT, "configuration_id": None, "results": None})
    assert r.status_code == 201, r.text
    assert r.json()["configuration_id"] is None and r.json()["results"] is None
    assert (await client.get("/training-results/base/v1")).json()[0]["configuration_id"] is None


async def test_null_machine_capabilities_as_aeros_defaults_them(client):
    needs = {"storage": None, "RAM": None, "GPU": False, "preinstalled_libraries": None, "available_models": None}
    r = await client.post("/transformation", json={**TRANSFORMATION, "needs": needs})
    assert r.status_code == 201, r.text
    assert (await client.get("/transformation/meta/scale")).json()["needs"] == needs


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/model", MODEL, "model_id"),
        ("/training-results", RESULT, "weights_id"),
        ("/strategy", STRATEGY, "strategy_id"),
        ("/transformation", TRANSFORMATION, "storage_id"),
        ("/collector", COLLECTOR, "collector_id"),
    ],
)
async def test_client_sent_id_fields_are_ignored(client, raw_db, path, body, field):
    # aerOS clients send whole documents back, ids included; the service decides where files are.
    r = await client.post(path, json={**body, field: "6571f0c2e4b0a1b2c3d4e5f6"})
    assert r.status_code == 201 and r.json()[field] is None
    stored = [doc for name in raw_db[0].list_collection_names() for doc in raw_db[0][name].find({field: {"$ne": None}})]
    assert stored == []


@pytest.mark.parametrize(
    "body",
    [
        {"model_version": "v1", "meta": None},  # no name
        {"model_name": "base", "meta": None},  # no version
        {"model_name": "base", "model_version": "v1"},  # no meta at all
        {"model_name": 5, "model_version": "v1", "meta": None},  # a name that is no string
        {"model_name": "base", "model_version": "v1", "meta": "keras"},  # meta that is no object
        {"model_name": "base", "model_version": "v1", "meta": {"library": None}},  # an object without library
    ],
)
async def test_what_aeros_should_have_refused_is_422(client, body):
    r = await client.post("/model", content=_untyped(body))
    assert r.status_code == 422, r.text
    assert (await client.get("/model")).json() == []


async def test_duplicates_are_409_and_unknown_items_404(client):
    assert (await client.post("/model", content=_untyped({**MODEL, "meta": None}))).status_code == 201
    assert (await client.post("/model", content=_untyped(MODEL))).status_code == 409  # aerOS: 400
    assert (await client.get("/model/nope/v1")).status_code == 404  # aerOS: 500
    # aerOS looked the model up before the body: unknown is 404 even with an unusable body.
    assert (await client.put("/model/meta/nope/v1", content=_untyped({"library": None}))).status_code == 404
    assert (await client.put("/model/meta/base/v1", content=_untyped({"library": None}))).status_code == 422


async def test_strategy_meta_update_with_null_meta_is_422(client):
    # aerOS answered 500 (`dict(None)`); the stored metadata must stay as it was.
    await client.post("/strategy", json=STRATEGY)
    r = await client.put("/strategy/meta/fedavg", content=_untyped({"meta": None}))
    assert r.status_code == 422
    assert (await client.get("/strategy/meta/fedavg")).json()["meta"] == {"k": "v"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/model", {**MODEL, "meta": {"library": "keras", "n": 2**64}}),
        ("/training-results", {**RESULT, "results": {"n": -(2**70)}}),
        ("/strategy", {**STRATEGY, "meta": {"n": 10**30}}),
    ],
)
async def test_integers_beyond_64_bits_are_422_not_500(client, path, body):
    # Free-form objects take any JSON number; the store holds 64-bit integers at most.
    r = await client.post(path, json=body)
    assert r.status_code == 422 and "64-bit range" in str(r.json()["detail"])
    assert (await client.get(path)).json() == []
