"""Conditional requests on stored files: the upload's ETag, If-None-Match → 304 on every download,
If-Match / If-None-Match: * on uploads (412), and the condition checked atomically with the switch."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import PLAN, grid_counts, make_task_references, payload, sha, upload

RESULT = {"model_name": "m", "model_version": "v", "training_id": "1", "configuration_id": "1", "results": {}}


async def _model(client):
    body = {"model_name": "m", "model_version": "v", "meta": {"library": "k"}}
    assert (await client.post("/model", json=body)).status_code == 201
    return "/model/m/v", "/model/m/v"


async def _weights(client):
    assert (await client.post("/training-results", json=RESULT)).status_code == 201
    return "/training-results/m/v/1/1", "/training-results/weights/m/v/1?encoding=raw"


async def _strategy(client):
    assert (await client.post("/strategy", json={"strategy_name": "s", "meta": {}})).status_code == 201
    return "/strategy/s", "/strategy/s"


async def _transformation(client):
    body = {"id": "t", "parameter_types": {}, "default_values": {}, "outputs": ["x"], "needs": {}}
    assert (await client.post("/transformation", json=body)).status_code == 201
    return "/transformation/t", "/transformation/t"


async def _checkpoint(client):
    await make_task_references(client)
    assert (await client.post("/tasks", json=PLAN)).status_code == 201
    assert (await client.put("/tasks/t1/status", json={"phase": "Running"})).status_code == 200
    assert (await client.post("/tasks/t1/checkpoints", json={"round": 1, "loss": 0.5})).status_code == 201
    return "/tasks/t1/checkpoints/1", "/tasks/t1/checkpoints/1"


KINDS = {
    "model": _model,
    "weights": _weights,
    "strategy": _strategy,
    "transformation": _transformation,
    "checkpoint": _checkpoint,
}
# A checkpoint's file is written once (issue 28, tests/server/test_task_claims.py): nothing to replace.
REPLACEABLE = [kind for kind in KINDS if kind != "checkpoint"]


@pytest.mark.parametrize("kind", KINDS)
async def test_upload_answers_the_etag_and_if_none_match_answers_304(client, kind):
    put, get = await KINDS[kind](client)
    data = payload(3000)
    r = await upload(client, put, data)
    assert r.status_code == 204 and r.content == b""
    tag = r.headers["etag"]
    assert tag == f'"{sha(data)}"'

    for method in (client.get, client.head):
        r = await method(get, headers={"If-None-Match": tag})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == tag, (kind, method)
    # Weak comparison, lists, and `*`: all name the current file.
    for header in (f"W/{tag}", f'"other", {tag}', "*", f'  "a" ,W/"b",{tag}  '):
        assert (await client.get(get, headers={"If-None-Match": header})).status_code == 304, header
    # Another tag, a stale one, a garbled value: the file, whole.
    for header in ('"other"', f'"{sha(b"old")}"', sha(data), "garbage, ,"):
        r = await client.get(get, headers={"If-None-Match": header})
        assert r.status_code == 200 and r.content == data, header
    # If-None-Match comes before Range.
    r = await client.get(get, headers={"If-None-Match": tag, "Range": "bytes=0-9"})
    assert r.status_code == 304


@pytest.mark.parametrize("kind", REPLACEABLE)
async def test_if_match_replaces_only_the_file_the_client_saw(client, kind):
    put, get = await KINDS[kind](client)
    # No file yet: any If-Match fails (nothing is the file the client saw), `*` too.
    for header in (f'"{sha(b"x")}"', "*"):
        r = await client.put(put, content=b"x", headers={"If-Match": header})
        assert r.status_code == 412 and "no file" in r.json()["detail"], header
    assert (await client.get(get)).status_code == 404
    # If-None-Match: * creates only.
    first = await client.put(put, content=b"first", headers={"If-None-Match": "*"})
    assert first.status_code == 204
    r = await client.put(put, content=b"again", headers={"If-None-Match": "*"})
    assert r.status_code == 412 and sha(b"first") in r.json()["detail"]

    stale = '"' + sha(b"something else") + '"'
    r = await client.put(put, content=b"lost", headers={"If-Match": stale})
    assert r.status_code == 412 and isinstance(r.json()["detail"], str)
    # A weak tag never matches If-Match (strong comparison).
    r = await client.put(put, content=b"lost", headers={"If-Match": f"W/{first.headers['etag']}"})
    assert r.status_code == 412
    assert (await client.get(get)).content == b"first"

    second = await client.put(put, content=b"second", headers={"If-Match": f"{stale}, {first.headers['etag']}"})
    assert second.status_code == 204 and second.headers["etag"] == f'"{sha(b"second")}"'
    third = await client.put(put, content=b"third", headers={"If-Match": "*"})
    assert third.status_code == 204
    assert (await client.get(get)).content == b"third"


async def test_unknown_item_is_404_before_any_precondition(client):
    r = await client.put("/model/none/v", content=b"x", headers={"If-Match": '"abc"'})
    assert r.status_code == 404


async def test_if_match_is_atomic_with_the_replacement(client, raw_db):
    """Two uploads that both saw the same file: both pass the first check, exactly one replaces it,
    the other is 412 and leaves nothing behind."""
    put, get = await _model(client)
    tag = (await upload(client, put, b"base")).headers["etag"]
    started = 0
    both_started = asyncio.Event()

    async def body(data: bytes):
        nonlocal started
        yield data[:10]
        started += 1
        if started == 2:
            both_started.set()
        # Each upload's first check is behind it once its body is being read.
        await asyncio.wait_for(both_started.wait(), 10)
        yield data[10:]

    async def replace(data: bytes):
        headers = {"If-Match": tag, "Content-Type": "application/octet-stream"}
        return await client.put(put, content=body(data), headers=headers)

    a, b = payload(50_000), payload(50_000)
    results = await asyncio.gather(replace(a), replace(b))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [204, 412], [r.text for r in results]
    winner = a if results[0].status_code == 204 else b
    r = await client.get(get)
    assert r.content == winner and r.headers["etag"] == f'"{sha(winner)}"'
    assert grid_counts(raw_db)[0] == 1  # the loser's file is gone, the replaced one too
