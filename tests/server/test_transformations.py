"""Data transformations: aerOS metadata, file, and the meta update aerOS always answered 500 to."""

from __future__ import annotations

from tests.helpers import grid_counts, payload, upload

T_ID = "application.tests.categorical_transformation"
TRANSFORMATION = {
    "id": T_ID,
    "description": "The class transforming y data into categorical data",
    "parameter_types": {"categories": "int"},
    "default_values": {"categories": 10},
    "outputs": ["np.ndarray", "np.ndarray"],
    "needs": {"storage": 0, "RAM": 0, "GPU": False, "preinstalled_libraries": {}, "available_models": {}},
}


async def test_crud(client, raw_db):
    r = await client.post("/transformation", json=TRANSFORMATION)
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: body[k] for k in TRANSFORMATION} == TRANSFORMATION and body["storage_id"] is None
    assert (await client.post("/transformation", json=TRANSFORMATION)).status_code == 409
    data = payload(700)
    assert (await upload(client, f"/transformation/{T_ID}", data)).status_code == 204
    assert (await client.get(f"/transformation/{T_ID}")).content == data
    assert (await client.get("/transformation")).json()[0]["storage_id"]
    assert (await client.delete(f"/transformation/{T_ID}")).status_code == 204
    assert grid_counts(raw_db) == (0, 0)
    assert (await client.get(f"/transformation/{T_ID}")).status_code == 404


async def test_meta_update(client):
    await client.post("/transformation", json=TRANSFORMATION)
    changed = {**TRANSFORMATION, "default_values": {"categories": 5}, "description": "five"}
    r = await client.put(f"/transformation/meta/{T_ID}", json=changed)
    assert r.status_code == 204, r.text
    doc = (await client.get("/transformation")).json()[0]
    assert doc["default_values"] == {"categories": 5} and doc["description"] == "five" and doc["id"] == T_ID
    without_id = {k: v for k, v in changed.items() if k != "id"}
    assert (await client.put(f"/transformation/meta/{T_ID}", json=without_id)).status_code == 204
    r = await client.put(f"/transformation/meta/{T_ID}", json={**changed, "id": "other"})
    assert r.status_code == 422 and "differs" in r.json()["detail"]
    assert (await client.put("/transformation/meta/nope", json=without_id)).status_code == 404
    assert (await client.put(f"/transformation/meta/{T_ID}", json={"description": "x"})).status_code == 422


async def test_required_fields(client):
    r = await client.post("/transformation", json={"id": "x"})
    assert r.status_code == 422
    missing = {e["loc"][-1] for e in r.json()["detail"]}
    assert {"parameter_types", "default_values", "outputs", "needs"} <= missing
    bad_needs = {**TRANSFORMATION, "needs": {"RAM": -1}}
    assert (await client.post("/transformation", json=bad_needs)).status_code == 422


async def test_single_metadata(client):
    assert (await client.get(f"/transformation/meta/{T_ID}")).status_code == 404
    await client.post("/transformation", json=TRANSFORMATION)
    r = await client.get(f"/transformation/meta/{T_ID}")
    assert r.status_code == 200 and r.json()["outputs"] == TRANSFORMATION["outputs"] and r.json()["id"] == T_ID
