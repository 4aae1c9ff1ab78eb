"""Odd values get a 4xx, never a 5xx or a dropped connection: huge numbers, lone surrogates,
non-finite floats, route-shaped names, clients that leave mid-upload. On the real wire server."""

from __future__ import annotations

import logging
import socket
import time

import httpx
import pytest

HUGE = "9" * 5000


def _metric(client: httpx.Client, name: str, **labels: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def http(live_server):
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        yield c


@pytest.fixture
def stored_model(http):
    assert http.post("/model", json={"model_name": "m", "model_version": "v1", "meta": {"library": "x"}}).is_success
    assert http.put("/model/m/v1", content=b"0123456789").status_code == 204
    return "/model/m/v1"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "header, status",
    [
        (f"bytes=0-{HUGE}", 206),  # the reproduction: 500 before (Python's integer-string limit)
        (f"bytes={HUGE}-", 416),
        (f"bytes=-{HUGE}", 206),
        (f"bytes={'0' * 5000}1-2", 206),  # many digits, small value
        ("bytes=99999999999999999999-", 416),
    ],
)
def test_huge_range_positions(http, stored_model, method, header, status):
    r = http.request(method, stored_model, headers={"Range": header})
    assert r.status_code == status, r.text
    if status == 206 and method == "GET":
        assert r.content in (b"0123456789", b"12")


def _post(http: httpx.Client, path: str, body: str) -> httpx.Response:
    return http.post(path, content=body.encode(), headers={"content-type": "application/json"})


ODD = {
    "surrogate": '"\\udc80"',
    "surrogate pair half": '"a\\ud800b"',
    "int beyond 64 bits": "9" * 30,
    "negative beyond 64 bits": "-" + "9" * 20,
    "2**63": str(2**63),
    "5000 digits": HUGE,
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "1e400": "1e400",
    "nested 900 deep": "[" * 900 + "]" * 900,  # found by the property-based run: a 500 rendering the error
    "nested 100 deep": '{"a":' * 100 + "1" + "}" * 100,
}


@pytest.mark.parametrize("value", ODD.values(), ids=ODD.keys())
@pytest.mark.parametrize(
    "path, template",
    [
        ("/model", '{"model_name": "a", "model_version": "v", "meta": {"library": "x", "n": VALUE}}'),
        ("/model", '{"model_name": VALUE, "model_version": "v", "meta": {"library": "x"}}'),
        ("/strategy", '{"strategy_name": "s", "strategy_description": VALUE}'),
        ("/strategy", '{"strategy_name": "s", "meta": {"list": [1, {"deep": [VALUE]}]}}'),
        (
            "/training-results",
            '{"model_name": "m", "model_version": "v1", "training_id": "t", "configuration_id": "1",'
            ' "results": {"loss": VALUE}}',
        ),
    ],
)
def test_odd_json_values_are_422(http, stored_model, path, template, value):
    r = _post(http, path, template.replace("VALUE", value))
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


def test_odd_values_do_not_count_as_database_outages(http, stored_model):
    before = _metric(http, "flrepo_database_errors_total")
    for value in ODD.values():
        body = '{"model_name": "a", "model_version": "v", "meta": {"library": "x", "n": VALUE}}'
        assert _post(http, "/model", body.replace("VALUE", value)).status_code == 422
    assert _metric(http, "flrepo_database_errors_total") == before
    assert _metric(http, "flrepo_http_requests_total", status="500") == 0
    assert _metric(http, "flrepo_http_requests_total", status="503") == 0


def test_odd_values_in_a_task_status_report(http, stored_model):
    http.post("/strategy", json={"strategy_name": "s"})
    http.put("/strategy/s", content=b"x")
    plan = {"task_id": "t", "model": {"model_name": "m", "model_version": "v1"}, "strategy": {"strategy_name": "s"}}
    assert http.post("/tasks", json=plan).status_code == 201
    for value in ("NaN", "1e999", "9" * 25, '"\\udfff"'):
        body = '{"round": {"round": 1, "loss": VALUE, "metrics": {"acc": VALUE}}}'.replace("VALUE", value)
        r = http.put("/tasks/t/status", content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text


def test_a_model_named_meta_takes_large_files(http, live_server):
    """`PUT /model/meta/v1` is the upload of model `meta`, not the metadata route: no 1 MiB body limit."""
    big = b"m" * (3 * 1024 * 1024)
    for name, version in [("meta", "v1"), ("meta", "meta")]:
        r = http.post("/model", json={"model_name": name, "model_version": version, "meta": {"library": "x"}})
        assert r.status_code == 201, r.text
        assert http.put(f"/model/{name}/{version}", content=big).status_code == 204
        assert http.get(f"/model/{name}/{version}").content == big
    # Route-shaped names elsewhere: a strategy called `meta`, a transformation called `meta`.
    assert http.post("/strategy", json={"strategy_name": "meta"}).status_code == 201
    assert http.put("/strategy/meta", content=big).status_code == 204
    assert http.get("/strategy/meta").content == big
    assert http.get("/strategy/meta/meta").json()["strategy_name"] == "meta"
    # The metadata route itself still refuses a body over the JSON limit.
    r = http.put("/model/meta/meta/v1", content=b'{"library": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    assert r.status_code == 413


def test_a_client_that_disconnects_mid_upload_is_not_an_error(http, live_server, stored_model, raw_db, caplog):
    files_before = raw_db[1]["fs.files"].count_documents({})
    host, port = live_server.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"PUT /model/m/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: 10000000\r\n\r\n" + b"x" * 300_000
            )
            time.sleep(0.3)
    deadline = time.monotonic() + 10
    while _metric(http, "flrepo_http_requests_total", route="/model/{model_name}/{model_version}", method="PUT") < 4:
        assert time.monotonic() < deadline, "the cut uploads were never finished"
        time.sleep(0.1)
    assert _metric(http, "flrepo_http_requests_total", status="500") == 0
    assert _metric(http, "flrepo_http_requests_total", status="499") == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert http.get(stored_model).content == b"0123456789"  # the previous file is untouched
    assert raw_db[1]["fs.files"].count_documents({}) == files_before
