"""Training collectors: aerOS 1.1.0's POST /collector, and the reads and delete around it."""

from __future__ import annotations

import httpx
import pytest
import yaml

from flrepo.server.auth import hash_key
from flrepo.server.main import create_app
from tests.helpers import drop, make_settings

COLLECTOR = {"name": "flower", "version": 1, "meta": {"framework": "flwr"}}


async def test_register_list_get_delete(client):
    r = await client.post("/collector", json=COLLECTOR)
    assert r.status_code == 201, r.text
    assert {k: r.json()[k] for k in COLLECTOR} == COLLECTOR and r.json()["created_at"]
    assert (await client.post("/collector", json={**COLLECTOR, "version": 2})).status_code == 201
    r = await client.get("/collector")
    assert r.status_code == 200 and r.headers["x-total-count"] == "2"
    assert [(c["name"], c["version"]) for c in r.json()] == [("flower", 1), ("flower", 2)]
    assert (await client.get("/collector", params={"limit": 1, "offset": 1})).json()[0]["version"] == 2
    r = await client.get("/collector/flower/2")
    assert r.status_code == 200 and r.json()["meta"] == {"framework": "flwr"}
    assert (await client.delete("/collector/flower/2")).status_code == 204
    assert (await client.get("/collector/flower/2")).status_code == 404
    assert (await client.delete("/collector/flower/2")).status_code == 404


async def test_duplicate_name_and_version_is_409(client):
    assert (await client.post("/collector", json=COLLECTOR)).status_code == 201
    r = await client.post("/collector", json={**COLLECTOR, "meta": {}})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]  # aerOS: 400
    assert len((await client.get("/collector")).json()) == 1


async def test_values_as_aeros_coerced_them(client):
    # aerOS's pydantic v1 model turned "3" into 3 and numbers in meta into strings.
    r = await client.post("/collector", json={"name": "c", "version": "3", "meta": {"rounds": 5}, "collector_id": "x"})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 3 and r.json()["meta"] == {"rounds": "5"} and r.json()["collector_id"] is None
    assert (await client.post("/collector", json={"name": "d", "version": 1, "meta": None})).json()["meta"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"version": 1},
        {"name": "c"},
        {"name": "a/b", "version": 1},
        {"name": "c", "version": -1},
        {"name": "c", "version": 1.5},
        {"name": "c", "version": 2**53},
        {"name": "c", "version": 1, "meta": {"nested": {"a": "b"}}},
        {"name": "c", "version": 1, "meta": {"$set": "x"}},
    ],
)
async def test_invalid_collectors_are_422(client, body):
    r = await client.post("/collector", json=body)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("path", ["/collector/c/x", "/collector/c/-1", "/collector/c/99999999999999999999"])
async def test_bad_versions_in_paths_are_422(client, path):
    assert (await client.get(path)).status_code == 422
    assert (await client.delete(path)).status_code == 422


async def test_roles_and_audit(mongo_url, tmp_path):
    keys = {role: f"key-of-{role}" for role in ("reader", "writer", "admin")}
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump([{"id": f"{r}-1", "role": r, "sha256": hash_key(k)} for r, k in keys.items()]))
    settings = make_settings(mongo_url, api_keys_file=path)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:

                def auth(role: str) -> dict[str, str]:
                    return {"Authorization": f"Bearer {keys[role]}"}

                assert (await c.get("/collector")).status_code == 401
                assert (await c.post("/collector", json=COLLECTOR, headers=auth("reader"))).status_code == 403
                assert (await c.post("/collector", json=COLLECTOR, headers=auth("writer"))).status_code == 201
                assert (await c.get("/collector/flower/1", headers=auth("reader"))).status_code == 200
                assert (await c.delete("/collector/flower/1", headers=auth("writer"))).status_code == 403
                assert (await c.delete("/collector/flower/1", headers=auth("admin"))).status_code == 204
                trail = (await c.get("/audit", headers=auth("admin"))).json()
                assert [(e["method"], e["route"], e["key_id"]) for e in trail] == [
                    ("DELETE", "/collector/{name}/{version}", "admin-1"),
                    ("POST", "/collector", "writer-1"),
                ]
    finally:
        drop(settings)


async def test_documented_in_openapi(client):
    doc = (await client.get("/openapi.json")).json()
    assert {"post", "get"} <= set(doc["paths"]["/collector"])
    assert {"get", "delete"} <= set(doc["paths"]["/collector/{name}/{version}"])
    assert "409" in doc["paths"]["/collector"]["post"]["responses"]
    assert "collectors" in {tag["name"] for tag in doc["tags"]}
