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


async def test_the_service_stops_even_when_stopped_during_its_first_checks(settings):
    # Stopped right after it started, its background jobs are inside their first database call, where
    # the driver (connecting) can swallow the cancel; the shutdown used to wait for ever then.
    import asyncio

    from flrepo.server.main import create_app

    async def start_and_stop() -> None:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            pass

    for attempt in range(5):
        run = asyncio.create_task(start_and_stop())
        await asyncio.wait({run}, timeout=60)  # generous: seconds on a busy machine
        stopped = run.done()
        if not stopped:
            run.cancel()  # a second cancel reaches the stuck job: the test ends, and fails
            await asyncio.wait({run}, timeout=60)
        assert stopped, f"start {attempt + 1}: the shutdown did not finish within 60 s"
        run.result()
