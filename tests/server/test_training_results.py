"""Training results: typed values, weights upload/download, configuration checks."""

from __future__ import annotations

import base64

from tests.helpers import CHUNK, grid_counts, payload, sha, upload

RESULT = {
    "model_name": "md_keras",
    "model_version": "v1",
    "training_id": "1",
    "configuration_id": "1",
    "results": {"rounds": "3", "final_loss": 81.9, "accuracy": "0.24", "epochs": 2, "converged": True},
}
WEIGHTS = "/training-results/md_keras/v1/1/1"


async def test_create_keeps_value_types(client):
    r = await client.post("/training-results", json=RESULT)
    assert r.status_code == 201, r.text
    assert r.json()["results"] == RESULT["results"]
    stored = (await client.get("/training-results/md_keras/v1")).json()[0]["results"]
    assert stored["rounds"] == "3" and stored["final_loss"] == 81.9
    assert stored["epochs"] == 2 and type(stored["epochs"]) is int
    assert stored["converged"] is True


async def test_duplicate_is_409_and_bad_values_422(client):
    assert (await client.post("/training-results", json=RESULT)).status_code == 201
    assert (await client.post("/training-results", json=RESULT)).status_code == 409
    other_config = {**RESULT, "configuration_id": "2"}
    assert (await client.post("/training-results", json=other_config)).status_code == 409
    for bad in ({"nested": {"a": 1}}, {"list": [1]}, {"none": None}, {"$gt": 1}, {"a.b": 1}):
        r = await client.post("/training-results", json={**RESULT, "training_id": "x", "results": bad})
        assert r.status_code == 422, bad
    r = await client.post("/training-results", json={"model_name": "a"})
    assert r.status_code == 422


async def test_weights_upload_download_and_errors(client, raw_db):
    r = await upload(client, WEIGHTS, b"w")
    assert r.status_code == 404
    await client.post("/training-results", json=RESULT)
    r = await upload(client, "/training-results/md_keras/v1/1/2", b"w")
    assert r.status_code == 409 and "configuration_id" in r.json()["detail"]
    r = await client.get("/training-results/weights/md_keras/v1/1")
    assert r.status_code == 404
    data = payload(CHUNK * 2 + 3)
    assert (await upload(client, WEIGHTS, data, filename="weights.npz")).status_code == 204
    r = await client.get("/training-results/weights/md_keras/v1/1", params={"encoding": "raw"})
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["etag"] == f'"{sha(data)}"'
    doc = (await client.get("/training-results")).json()[0]
    assert doc["weights_id"] and doc["size"] == len(data) and doc["sha256"] == sha(data)
    # Replacing keeps exactly one file.
    assert (await upload(client, WEIGHTS, b"new")).status_code == 204
    assert grid_counts(raw_db) == (1, 1)


async def test_weights_base64_by_default_as_aeros_answers(client):
    await client.post("/training-results", json=RESULT)
    for size in (0, 1, 2, 3, CHUNK + 1, CHUNK * 2 + 2):
        data = payload(size)
        await upload(client, WEIGHTS, data)
        for params in ({}, {"encoding": "base64"}):
            r = await client.get("/training-results/weights/md_keras/v1/1", params=params)
            assert r.status_code == 200
            assert r.content == base64.b64encode(data)
            assert r.headers["content-length"] == str(len(r.content))


async def test_lists_and_delete(client, raw_db):
    for tid in ("1", "2"):
        await client.post("/training-results", json={**RESULT, "training_id": tid})
    await client.post("/training-results", json={**RESULT, "model_name": "other"})
    r = await client.get("/training-results")
    assert len(r.json()) == 3 and r.headers["x-total-count"] == "3"
    r = await client.get("/training-results/md_keras/v1")
    assert [d["training_id"] for d in r.json()] == ["1", "2"]
    r = await client.get("/training-results/md_keras/v1", params={"limit": 1, "offset": 1})
    assert [d["training_id"] for d in r.json()] == ["2"] and r.headers["x-total-count"] == "2"
    assert (await client.get("/training-results/nobody/v9")).json() == []
    await upload(client, WEIGHTS, payload(10))
    assert (await client.delete("/training-results/md_keras/v1/1")).status_code == 204
    assert grid_counts(raw_db) == (0, 0)
    assert (await client.delete("/training-results/md_keras/v1/1")).status_code == 404
    assert (await client.get("/training-results/weights/md_keras/v1/1")).status_code == 404


async def test_single_metadata(client):
    assert (await client.get("/training-results/md_keras/v1/1")).status_code == 404
    await client.post("/training-results", json=RESULT)
    r = await client.get("/training-results/md_keras/v1/1")
    assert r.status_code == 200 and r.json()["results"] == RESULT["results"] and r.json()["weights_id"] is None
    assert (await client.get("/training-results/md_keras/v1/2")).status_code == 404
