"""Per-key quotas on open resumable uploads (how many, how many bytes announced) with a clear refusal,
and `GET /uploads` listing a writer's own open uploads (an admin's: all) (issue 28)."""

from __future__ import annotations

import base64

import httpx
import pytest
import yaml

from flrepo.server.auth import hash_key
from flrepo.server.main import create_app
from tests.helpers import drop, make_model, make_settings

KEYS = {"writer-a": ("writer", "key-a"), "writer-b": ("writer", "key-b"), "admin": ("admin", "key-admin")}
TUS = {"Tus-Resumable": "1.0.0"}


def _create(target: str, length: int) -> dict[str, str]:
    return {
        **TUS,
        "Upload-Length": str(length),
        "Upload-Metadata": f"target {base64.b64encode(target.encode()).decode()}",
    }


@pytest.fixture
async def clients(mongo_url, tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump([{"id": i, "role": r, "sha256": hash_key(k)} for i, (r, k) in KEYS.items()]))
    settings = make_settings(mongo_url, api_keys_file=path, upload_max_open=2, upload_max_reserved_bytes=1000)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            made = {
                i: httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-API-Key": k})
                for i, (_, k) in KEYS.items()
            }
            yield made
            for client in made.values():
                await client.aclose()
    finally:
        drop(settings)


async def test_a_key_beyond_its_quota_is_refused_clearly_and_sees_its_uploads(clients):
    a, b, admin = clients["writer-a"], clients["writer-b"], clients["admin"]
    for version in ("v1", "v2", "v3"):
        await make_model(admin, "m", version)
    assert (await a.post("/uploads", headers=_create("/model/m/v1", 400))).status_code == 201
    too_big = await a.post("/uploads", headers=_create("/model/m/v2", 700))
    assert too_big.status_code == 507 and "FLREPO_UPLOAD_MAX_RESERVED_BYTES" in too_big.json()["detail"]
    assert (await a.post("/uploads", headers=_create("/model/m/v2", 500))).status_code == 201
    too_many = await a.post("/uploads", headers=_create("/model/m/v3", 10))
    assert too_many.status_code == 429 and "FLREPO_UPLOAD_MAX_OPEN" in too_many.json()["detail"]
    # Another key has its own quota.
    assert (await b.post("/uploads", headers=_create("/model/m/v3", 10))).status_code == 201

    mine = await a.get("/uploads")
    assert mine.status_code == 200 and mine.headers["x-total-count"] == "2"
    listed = {u["target"]: u for u in mine.json()}
    assert set(listed) == {"/model/m/v1", "/model/m/v2"} and all(u["key_id"] == "writer-a" for u in listed.values())
    first = listed["/model/m/v1"]
    assert (first["length"], first["offset"]) == (400, 0) and first["expires_at"]
    assert [u["target"] for u in (await b.get("/uploads")).json()] == ["/model/m/v3"]
    assert (await admin.get("/uploads")).headers["x-total-count"] == "3"

    # Terminating one frees its place.
    assert (await a.delete(f"/uploads/{first['id']}", headers=TUS)).status_code == 204
    assert (await a.post("/uploads", headers=_create("/model/m/v3", 10))).status_code == 201
