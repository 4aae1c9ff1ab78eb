async def test_health(client):
    r = await client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await client.get("/ready")
    assert r.status_code == 200, r.text


async def test_model_roundtrip(client):
    r = await client.post("/model", json={"model_name": "m", "model_version": "v1", "meta": {"library": "keras"}})
    assert r.status_code == 201, r.text
    r = await client.put("/model/m/v1", files={"file": ("w.bin", b"hello", "application/octet-stream")})
    assert r.status_code == 204, r.text
    r = await client.get("/model/m/v1")
    assert r.status_code == 200 and r.content == b"hello", r.text
