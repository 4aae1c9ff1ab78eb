"""Strategies: metadata, file, meta updates."""

from __future__ import annotations

from tests.helpers import grid_counts, payload, upload

STRATEGY = {"strategy_name": "fedavg", "strategy_description": "FedAvg", "meta": {"class": "FedAvg"}}


async def test_crud(client, raw_db):
    r = await client.post("/strategy", json=STRATEGY)
    assert r.status_code == 201 and r.json()["strategy_id"] is None
    assert (await client.post("/strategy", json=STRATEGY)).status_code == 409
    assert (await client.get("/strategy/fedavg")).status_code == 404  # no file yet
    data = payload(5000)
    assert (await upload(client, "/strategy/fedavg", data, filename="fedavg.pkl")).status_code == 204
    r = await client.get("/strategy/fedavg")
    assert r.content == data and 'filename="fedavg.pkl"' in r.headers["content-disposition"]
    listed = (await client.get("/strategy")).json()
    assert [s["strategy_name"] for s in listed] == ["fedavg"] and listed[0]["strategy_id"]
    assert (await client.delete("/strategy/fedavg")).status_code == 204
    assert grid_counts(raw_db) == (0, 0)
    assert (await client.delete("/strategy/fedavg")).status_code == 404


async def test_meta_defaults_and_update(client):
    r = await client.post("/strategy", json={"strategy_name": "bare"})
    assert r.status_code == 201 and r.json()["meta"] == {} and r.json()["strategy_description"] is None
    r = await client.put("/strategy/meta/bare", json={"meta": {"fraction_fit": 0.5}})
    assert r.status_code == 204
    doc = (await client.get("/strategy")).json()[0]
    assert doc["meta"] == {"fraction_fit": 0.5} and doc["strategy_description"] is None
    r = await client.put("/strategy/meta/bare", json={"meta": {}, "strategy_description": "now described"})
    assert r.status_code == 204
    assert (await client.get("/strategy")).json()[0]["strategy_description"] == "now described"
    assert (await client.put("/strategy/meta/nope", json={"meta": {}})).status_code == 404
    assert (await client.put("/strategy/meta/bare", json={})).status_code == 422
    assert (await client.put("/strategy/meta/bare", json={"meta": {"$x": 1}})).status_code == 422


async def test_unknown_and_invalid(client):
    assert (await upload(client, "/strategy/nope", b"x")).status_code == 404
    assert (await client.get("/strategy/nope")).status_code == 404
    assert (await client.post("/strategy", json={})).status_code == 422
    assert (await client.post("/strategy", json={"strategy_name": "$bad"})).status_code == 422


async def test_single_metadata(client):
    assert (await client.get("/strategy/meta/fedavg")).status_code == 404
    await client.post("/strategy", json=STRATEGY)
    r = await client.get("/strategy/meta/fedavg")
    assert r.status_code == 200 and r.json()["meta"] == {"class": "FedAvg"} and r.json()["strategy_id"] is None
