"""Request ids, JSON logs, metrics, the JSON body limit, CORS and the audit trail."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import yaml

from flrepo.logs import JsonFormatter, TextFormatter, request_id_var
from flrepo.server.auth import hash_key
from flrepo.server.main import create_app
from tests.helpers import drop, make_settings

BODY = {"model_name": "m", "model_version": "v", "meta": {"library": "k"}}


async def test_request_id_is_returned_or_generated(client):
    r = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert len(r.headers["x-request-id"]) == 32
    assert (await client.get("/model/none/v")).headers["x-request-id"]


async def test_access_log_is_json_with_request_id(client, caplog):
    caplog.set_level(logging.INFO, logger="flrepo.access")
    await client.post("/model", json=BODY, headers={"X-Request-ID": "req-42"})
    record = next(r for r in caplog.records if r.name == "flrepo.access")
    token = request_id_var.set("req-42")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "req-42" and line["status"] == 201 and line["route"] == "/model"
    assert line["method"] == "POST" and line["duration_ms"] >= 0


async def test_metrics(client):
    await client.post("/model", json=BODY)
    await client.put("/model/m/v", content=b"x" * 1000, headers={"content-type": "application/octet-stream"})
    await client.get("/model/m/v")
    await client.get("/model/nope/v")
    text = (await client.get("/metrics")).text
    assert 'flrepo_http_requests_total{method="POST",route="/model",status="201"} 1.0' in text
    assert 'route="/model/{model_name}/{model_version}",status="404"' in text
    assert "flrepo_http_request_duration_seconds_bucket" in text
    uploaded = float(
        next(line.split()[-1] for line in text.splitlines() if line.startswith("flrepo_uploaded_bytes_total"))
    )
    assert uploaded >= 1000
    assert "flrepo_downloaded_bytes_total" in text


def _samples(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one series in the Prometheus text format."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            found[series[len(name) :]] = float(value)
    return found


async def test_metrics_follow_prometheus_conventions(client):
    await client.post("/model", json=BODY)
    await client.put("/model/m/v", content=b"x" * 5000, headers={"content-type": "application/octet-stream"})
    await client.get("/model/m/v")
    text = (await client.get("/metrics")).text
    assert "_created" not in text
    assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text
    assert "python_gc_objects_collected_total" in text
    assert "# TYPE flrepo_http_requests_in_flight gauge" in text
    route = 'route="/model/{model_name}/{model_version}"'
    received = _samples(text, "flrepo_http_request_size_bytes_sum")
    sent = _samples(text, "flrepo_http_response_size_bytes_sum")
    assert received[f'{{method="PUT",{route}}}'] >= 5000
    assert sent[f'{{method="GET",{route}}}'] == 5000
    assert _samples(text, "flrepo_http_response_size_bytes_count")[f'{{method="GET",{route}}}'] == 1
    # Labelled by the route template, never the raw path (bounded label values).
    assert "/model/m/v" not in text


async def test_in_flight_gauge_counts_requests_being_served(client):
    release = asyncio.Event()

    async def slow_body():
        yield b"a" * 100
        await asyncio.wait_for(release.wait(), 10)
        yield b"b" * 100

    assert (await client.post("/model", json=BODY)).status_code == 201
    upload = asyncio.create_task(
        client.put("/model/m/v", content=slow_body(), headers={"content-type": "application/octet-stream"})
    )
    await asyncio.sleep(0.2)
    during = _samples((await client.get("/metrics")).text, "flrepo_http_requests_in_flight")[""]
    release.set()
    assert (await upload).status_code == 204
    after = _samples((await client.get("/metrics")).text, "flrepo_http_requests_in_flight")[""]
    assert during == 2 and after == 1  # the upload and the scrape itself; then the scrape alone


async def test_head_metrics(mongo_url, tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump([{"id": "r", "role": "reader", "sha256": hash_key("r-key")}]))
    for public, anonymous in ((False, 401), (True, 200)):
        settings = make_settings(mongo_url, api_keys_file=path, metrics_public=public)
        app = create_app(settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.head("/metrics", headers={"X-API-Key": "r-key"})
            assert r.status_code == 200 and r.content == b"" and r.headers["content-type"].startswith("text/plain")
            assert (await c.head("/metrics")).status_code == anonymous


async def test_access_log_has_client_agent_and_byte_counts(client, caplog):
    caplog.set_level(logging.INFO, logger="flrepo.access")
    agent = 'probe/1.0 "quoted"\nINFO forged\x1b'
    await client.post("/model", json=BODY)
    await client.put(
        "/model/m/v", content=b"x" * 1234, headers={"content-type": "application/octet-stream", "User-Agent": agent}
    )
    record = [r for r in caplog.records if r.name == "flrepo.access"][-1]
    line = json.loads(JsonFormatter().format(record))
    assert line["client"] == "127.0.0.1" and line["user_agent"] == agent
    assert line["bytes_in"] == 1234 and line["bytes_out"] == 0 and line["status"] == 204
    text = TextFormatter().format(record)
    # One line: the agent's newline and escape are written as escapes, its quotes cannot end the field.
    assert "\n" not in text and "\x1b" not in text
    assert "\\nINFO forged\\x1b" in text and '"quoted"' not in text
    assert "127.0.0.1 in=1234 out=0" in text


async def test_json_body_over_limit_is_413(client, app):
    app_settings = app.state.settings
    big = {**BODY, "meta": {"library": "k", "description": "x" * 10_000}}
    assert (await client.post("/model", json=big)).status_code == 201
    # The limit is read when the app is built; build one with a small limit.
    small = create_app(app_settings.model_copy(update={"max_body_bytes": 2048}))
    async with small.router.lifespan_context(small):
        transport = httpx.ASGITransport(app=small)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post("/model", json={**big, "model_name": "other"})
            assert r.status_code == 413 and "larger than 2048" in r.json()["detail"]
            # Streaming with no Content-Length is counted too.
            payload = json.dumps({**big, "model_name": "other"}).encode()

            async def chunks():
                for i in range(0, len(payload), 1000):
                    yield payload[i : i + 1000]

            r = await c.post("/model", content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413
            # File uploads are not JSON bodies: they have their own, larger limit.
            assert (await c.post("/model", json={**BODY, "model_name": "small"})).status_code == 201
            r = await c.put(
                "/model/small/v", content=b"y" * 10_000, headers={"content-type": "application/octet-stream"}
            )
            assert r.status_code == 204
    assert (await client.get("/model/meta", params={"model_name": "other", "model_version": "v"})).status_code == 404


async def test_cors_when_configured(mongo_url):
    settings = make_settings(mongo_url, cors_origins=["https://ui.example"])
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.options("/model", headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "GET"})
        assert r.headers["access-control-allow-origin"] == "https://ui.example"
        r = await c.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_audit_trail_records_who_changed_what(mongo_url, tmp_path):
    keys = {"writer": "w-key", "admin": "a-key", "reader": "r-key"}
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump([{"id": f"{r}-id", "role": r, "sha256": hash_key(k)} for r, k in keys.items()]))
    settings = make_settings(mongo_url, api_keys_file=path)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                w = {"X-API-Key": keys["writer"]}
                a = {"X-API-Key": keys["admin"]}
                assert (await c.post("/model", json=BODY, headers=w)).status_code == 201
                assert (await c.post("/model", json=BODY, headers=w)).status_code == 409  # failures are not audited
                assert (await c.get("/model", headers=w)).status_code == 200  # reads are not audited
                assert (await c.delete("/model/m/v", headers=a)).status_code == 204
                assert (await c.get("/audit", headers=w)).status_code == 403
                r = await c.get("/audit", headers=a)
                assert r.status_code == 200
                entries = r.json()
                assert [(e["method"], e["key_id"], e["status"]) for e in entries] == [
                    ("DELETE", "admin-id", 204),
                    ("POST", "writer-id", 201),
                ]
                assert entries[1]["route"] == "/model" and entries[1]["request_id"]
                only = (await c.get("/audit", headers=a, params={"key_id": "writer-id"})).json()
                assert len(only) == 1
    finally:
        drop(settings)


async def test_audit_line_is_written_before_the_client_hears_of_the_change(app, raw_db):
    """The audit line is in the database when the response starts, so GET /audit right after a
    change shows it (read-your-writes), however the server schedules the rest of the request."""
    body = json.dumps(BODY).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/model",
        "raw_path": b"/model",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    audited_at_start: list[int] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            assert message["status"] == 201
            audited_at_start.append(raw_db[0]["audit"].count_documents({"method": "POST", "route": "/model"}))

    await app(scope, receive, send)
    assert audited_at_start == [1]
