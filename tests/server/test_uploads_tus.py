"""Resumable uploads (tus 1.0) at /uploads: the protocol with `tuspy` and by hand, on the real store."""

from __future__ import annotations

import base64
import hashlib
import socket
import zlib
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from tusclient import client as tus_client
from tusclient.storage.filestorage import FileStorage

from flrepo.server.auth import hash_key
from flrepo.server.http.file_uploads import STREAMED_UPLOAD
from flrepo.server.http.tus_targets import TARGETS
from flrepo.server.main import create_app
from flrepo.server.storage.sweep import sweep
from tests.helpers import LiveServer, drop, grid_counts, make_model, make_settings, payload, sha, upload

TUS = {"Tus-Resumable": "1.0.0"}
MiB = 1024 * 1024


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


async def create(client: httpx.AsyncClient, target: str, length: int, **more: str) -> httpx.Response:
    headers = {**TUS, "Upload-Length": str(length), "Upload-Metadata": metadata(target=target, **more)}
    return await client.post("/uploads/", headers=headers)


async def patch(
    client: httpx.AsyncClient, url: str, offset: int, data: bytes, checksum: str | None = None
) -> httpx.Response:
    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
    if checksum:
        headers["Upload-Checksum"] = checksum
    return await client.patch(url, content=data, headers=headers)


def sha256_header(data: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()


async def test_options_tells_what_the_server_supports(client):
    r = await client.options("/uploads")
    assert r.status_code == 204
    assert r.headers["tus-version"] == "1.0.0"
    assert {"creation", "termination", "checksum", "expiration"} <= set(r.headers["tus-extension"].split(","))
    assert "sha256" in r.headers["tus-checksum-algorithm"].split(",")
    assert int(r.headers["tus-max-size"]) > 0


async def test_create_patch_in_parts_then_the_file_is_attached(client, raw_db):
    await make_model(client, "base", "base2")
    data = payload(700 * 1024 + 123)  # parts end mid-chunk (255 KiB chunks)
    r = await create(client, "/model/base/base2", len(data), filename="weights.npz")
    assert r.status_code == 201, r.text
    assert r.headers["tus-resumable"] == "1.0.0"
    url = r.headers["location"]
    assert url.startswith("/uploads/")
    offset = 0
    for size in (100_000, 300_001, 5, len(data)):
        part = data[offset : offset + size]
        r = await patch(client, url, offset, part, sha256_header(part))
        assert r.status_code == 204, r.text
        offset += len(part)
        assert int(r.headers["upload-offset"]) == offset
        if offset == len(data):
            break
        head = await client.head(url, headers=TUS)
        assert int(head.headers["upload-offset"]) == offset
        assert int(head.headers["upload-length"]) == len(data)
    got = await client.get("/model/base/base2")
    assert got.content == data
    assert got.headers["etag"].strip('"') == sha(data)
    meta = (await client.get("/model/meta", params={"model_name": "base", "model_version": "base2"})).json()
    assert meta["sha256"] == sha(data) and meta["size"] == len(data) and meta["filename"] == "weights.npz"
    stored = raw_db[0]["models"].find_one({"model_name": "base"})
    assert stored["crc32"] == zlib.crc32(data)
    # One GridFS file, no leftover chunks.
    grid = raw_db[1]
    assert grid["fs.files"].count_documents({}) == 1
    assert grid["fs.chunks"].count_documents({}) == -(-len(data) // (255 * 1024))


async def _upload_id(client: httpx.AsyncClient, target: str, length: int, **more: str) -> str:
    r = await create(client, target, length, **more)
    assert r.status_code == 201, r.text
    return str(r.headers["location"])


async def test_termination_removes_the_upload_and_its_chunks(client, raw_db):
    await make_model(client, "m", "v1")
    url = await _upload_id(client, "/model/m/v1", 1000 * 1024)
    assert (await patch(client, url, 0, payload(600 * 1024))).status_code == 204
    assert raw_db[1]["fs.chunks"].count_documents({}) >= 2
    r = await client.delete(url, headers=TUS)
    assert r.status_code == 204 and r.headers["tus-resumable"] == "1.0.0"
    assert raw_db[1]["fs.chunks"].count_documents({}) == 0
    assert raw_db[0]["uploads"].count_documents({}) == 0
    gone = await client.head(url, headers=TUS)
    assert gone.status_code == 404
    assert (await patch(client, url, 600 * 1024, b"x")).json()["detail"]


async def test_a_part_whose_checksum_differs_is_discarded_with_460(client):
    await make_model(client, "m", "v1")
    data = payload(300 * 1024)
    url = await _upload_id(client, "/model/m/v1", len(data))
    first = data[: 100 * 1024]
    assert (await patch(client, url, 0, first, sha256_header(first))).status_code == 204
    rest = data[len(first) :]
    # Another last byte for certain: the payload is random, so a fixed replacement byte matched it once in 256 runs.
    other = rest[:-1] + bytes([rest[-1] ^ 0xFF])
    bad = await patch(client, url, len(first), rest, sha256_header(other))
    assert bad.status_code == 460, bad.text
    assert "detail" in bad.json() and bad.headers["tus-resumable"] == "1.0.0"
    assert int((await client.head(url, headers=TUS)).headers["upload-offset"]) == len(first)
    assert (await patch(client, url, len(first), rest, sha256_header(rest))).status_code == 204
    assert (await client.get("/model/m/v1")).content == data


async def test_protocol_refusals(client, settings):
    await make_model(client, "m", "v1")
    url = await _upload_id(client, "/model/m/v1", 10)
    # Offset mismatch: 409, nothing stored.
    assert (await patch(client, url, 5, b"abcde")).status_code == 409
    assert int((await client.head(url, headers=TUS)).headers["upload-offset"]) == 0
    # Missing or wrong Tus-Resumable: 412 with the supported version.
    no_version = await client.head(url)
    assert no_version.status_code == 412 and no_version.headers["tus-version"] == "1.0.0"
    assert (await client.patch(url, content=b"x", headers={"Tus-Resumable": "0.2.2"})).status_code == 412
    # Wrong content type: 415; missing offset, unknown checksum algorithm: 400.
    plain = {**TUS, "Upload-Offset": "0", "Content-Type": "application/octet-stream"}
    assert (await client.patch(url, content=b"x", headers=plain)).status_code == 415
    no_offset = {**TUS, "Content-Type": "application/offset+octet-stream"}
    assert (await client.patch(url, content=b"x", headers=no_offset)).status_code == 400
    assert (await patch(client, url, 0, b"x", "crc99 AAAA")).status_code == 400
    # Beyond the declared length: 413.
    assert (await patch(client, url, 0, b"x" * 11)).status_code == 413
    # Over FLREPO_MAX_UPLOAD_BYTES at creation: 413; without Upload-Length: 400; bad metadata: 400.
    assert (await create(client, "/model/m/v1", settings.max_upload_bytes + 1)).status_code == 413
    no_length = {**TUS, "Upload-Metadata": metadata(target="/model/m/v1")}
    assert (await client.post("/uploads", headers=no_length)).status_code == 400
    bad_meta = {**TUS, "Upload-Length": "3", "Upload-Metadata": "target %%%"}
    assert (await client.post("/uploads", headers=bad_meta)).status_code == 400
    # Unknown upload: 404.
    assert (await client.head("/uploads/" + "0" * 32, headers=TUS)).status_code == 404
    for r in [no_version]:
        assert r.headers["tus-resumable"] == "1.0.0"


async def test_targets_are_checked_at_creation(client):
    await make_model(client, "m", "v1")
    # Unknown items answer 404, as their PUT does.
    assert (await create(client, "/model/m/v2", 10)).status_code == 404
    assert (await create(client, "/strategy/nothing", 10)).status_code == 404
    assert (await create(client, "/training-results/m/v1/r9/1", 10)).status_code == 404
    # Paths that take no file, or no path at all: 422.
    for target in ("/model", "/model/meta/m/v1", "/tasks/t1/status", "/nowhere", "model/m/v1", "/model/m/v1?x=1"):
        r = await create(client, target, 10)
        assert r.status_code == 422, (target, r.text)
    # Invalid names: 422 from the target route's own validation.
    assert (await create(client, "/model/%24where/v1", 10)).status_code == 422
    no_target = {**TUS, "Upload-Length": "10", "Upload-Metadata": metadata(filename="x.bin")}
    assert (await client.post("/uploads", headers=no_target)).status_code == 422


async def test_every_kind_of_file_is_a_target(client):
    """Training-result weights (with their configuration id), strategies, transformations, checkpoints."""
    from tests.helpers import make_task

    await make_task(client)
    result = {"model_name": "digits", "model_version": "v1", "training_id": "r1", "configuration_id": "7"}
    assert (await client.post("/training-results", json={**result, "results": {}})).status_code == 201
    assert (await client.post("/tasks/t1/checkpoints", json={"round": 1, "loss": 0.5})).status_code == 201
    assert (await create(client, "/training-results/digits/v1/r1/8", 4)).status_code == 409
    for target, path in [
        ("/training-results/digits/v1/r1/7", "/training-results/weights/digits/v1/r1?encoding=raw"),
        ("/strategy/fedavg", "/strategy/fedavg"),
        ("/transformation/scale", "/transformation/scale"),
        ("/tasks/t1/checkpoints/1", "/tasks/t1/checkpoints/1"),
        ("/model/digits/v1/", "/model/digits/v1"),
    ]:
        data = payload(1000)
        url = await _upload_id(client, target, len(data), filename="f.bin")
        r = await patch(client, url, 0, data, sha256_header(data))
        assert r.status_code == 204, (target, r.text)
        assert (await client.get(path)).content == data, target


async def test_the_old_file_stays_until_the_upload_completes(client, raw_db):
    await make_model(client, "m", "v1")
    old = payload(2000)
    assert (await upload(client, "/model/m/v1", old)).status_code == 204
    new = payload(600 * 1024)
    url = await _upload_id(client, "/model/m/v1", len(new))
    assert (await patch(client, url, 0, new[:400_000])).status_code == 204
    during = await client.get("/model/m/v1")
    assert during.content == old and during.headers["etag"].strip('"') == sha(old)
    assert (await patch(client, url, 400_000, new[400_000:])).status_code == 204
    after = await client.get("/model/m/v1")
    assert after.content == new and after.headers["etag"].strip('"') == sha(new)
    assert raw_db[1]["fs.files"].count_documents({}) == 1  # the old file was deleted after the switch
    # The completed upload still tells its offset (a client that lost the last answer asks).
    head = await client.head(url, headers=TUS)
    assert head.status_code == 200 and int(head.headers["upload-offset"]) == len(new)
    # The completion is in the audit trail as a PUT of the target.
    trail = (await client.get("/audit")).json()
    assert any(e["method"] == "PUT" and e["path"] == "/model/m/v1" and e["status"] == 204 for e in trail)


async def test_an_empty_file_completes_at_creation(client):
    await make_model(client, "m", "v1")
    r = await create(client, "/model/m/v1", 0, filename="empty.bin")
    assert r.status_code == 201, r.text
    got = await client.get("/model/m/v1")
    assert got.status_code == 200 and got.content == b""


async def test_a_target_deleted_during_the_upload_is_refused_and_the_upload_removed(client, raw_db):
    await make_model(client, "m", "v1")
    url = await _upload_id(client, "/model/m/v1", 2000)
    assert (await patch(client, url, 0, payload(1000))).status_code == 204
    assert (await client.delete("/model/m/v1")).status_code == 204
    r = await patch(client, url, 1000, payload(1000))
    assert r.status_code == 404, r.text
    assert raw_db[1]["fs.chunks"].count_documents({}) == 0 and raw_db[1]["fs.files"].count_documents({}) == 0
    assert (await client.head(url, headers=TUS)).status_code == 404


async def test_the_sweep_keeps_live_uploads_and_removes_expired_ones(app, client, raw_db):
    await make_model(client, "m", "v1")
    live = await _upload_id(client, "/model/m/v1", 2000)
    assert (await patch(client, live, 0, payload(1000))).status_code == 204
    expired = await _upload_id(client, "/model/m/v1", 2000)
    assert (await patch(client, expired, 0, payload(1000))).status_code == 204
    past = datetime.now(UTC) - timedelta(seconds=1)
    raw_db[0]["uploads"].update_one({"_id": expired.rsplit("/", 1)[1]}, {"$set": {"expires_at": past}})
    assert (await client.head(expired, headers=TUS)).status_code == 404  # expired: gone for clients at once
    report = await sweep(app.state.db, timedelta(0))  # no grace: only the upload document protects chunks
    assert report.expired_uploads == 1
    assert raw_db[0]["uploads"].count_documents({}) == 1
    assert raw_db[1]["fs.chunks"].count_documents({}) == 1  # the live upload's one chunk
    assert (await patch(client, live, 1000, payload(1000))).status_code == 204
    assert (await client.get("/model/m/v1")).status_code == 200


def _cut_mid_part(base: str, url: str, offset: int, part: bytes, sent: int) -> None:
    """A PATCH that announces `part` whole, sends `sent` bytes of it, then closes the connection."""
    where = urlsplit(base)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        head = (
            f"PATCH {urlsplit(url).path} HTTP/1.1\r\nHost: {where.netloc}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(part)}\r\n\r\n"
        )
        sock.sendall(head.encode() + part[:sent])


def test_tuspy_upload_interrupted_twice_then_resumed_by_a_new_client(settings, tmp_path):
    """12 MiB with tuspy: a client that stops after 4 MiB, a connection closed mid-part, then a new
    tuspy client resumes from the stored URL; the stored file's sha256 matches."""
    data = payload(12 * MiB)
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    with LiveServer(create_app(settings)) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        assert http.post("/model", json={"model_name": "big", "model_version": "v1", "meta": {"library": "x"}})
        urls = FileStorage(str(tmp_path / "urls.json"))
        meta = {"target": "/model/big/v1", "filename": "model.bin"}
        first = tus_client.TusClient(f"{live.url}/uploads/").uploader(
            str(source), chunk_size=4 * MiB, metadata=meta, store_url=True, url_storage=urls
        )
        first.upload(stop_at=4 * MiB)  # the client stops after 4 MiB
        url = first.url
        assert int(http.head(url, headers=TUS).headers["upload-offset"]) == 4 * MiB
        # The next part's connection closes after 1.5 MiB of 4: what arrived is kept.
        _cut_mid_part(live.url, url, 4 * MiB, data[4 * MiB : 8 * MiB], 3 * MiB // 2)
        offset = 4 * MiB
        for _ in range(100):  # the server notices the closed connection
            offset = int(http.head(url, headers=TUS).headers["upload-offset"])
            if offset > 4 * MiB:
                break
        assert 4 * MiB < offset <= 4 * MiB + 3 * MiB // 2
        assert http.get("/model/big/v1").status_code == 404  # nothing attached yet
        # A new client finds the URL in its storage, asks for the offset and sends the rest, checksummed.
        second = tus_client.TusClient(f"{live.url}/uploads/").uploader(
            str(source), chunk_size=3 * MiB, metadata=meta, store_url=True, url_storage=urls, upload_checksum=True
        )
        assert second.url == url and second.offset == offset
        second.upload()
        got = http.get("/model/big/v1")
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == sha(data) == got.headers["etag"].strip('"')


@pytest.fixture
def keyed(mongo_url, tmp_path):
    keys = {"reader": "key-r", "writer": "key-w", "other": "key-o"}
    roles = {"reader": "reader", "writer": "writer", "other": "writer"}
    path = tmp_path / "keys.yaml"
    path.write_text(
        yaml.safe_dump([{"id": name, "role": roles[name], "sha256": hash_key(key)} for name, key in keys.items()])
    )
    settings = make_settings(mongo_url, api_keys_file=path)
    yield settings, {name: {"Authorization": f"Bearer {key}", **TUS} for name, key in keys.items()}
    drop(settings)


async def test_roles_a_reader_cannot_upload_a_writer_can_and_only_its_own(keyed):
    settings, auth = keyed
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://flrepo.test") as c:
            body = {"model_name": "m", "model_version": "v1", "meta": {"library": "x"}}
            assert (await c.post("/model", json=body, headers=auth["writer"])).status_code == 201
            create_headers = {"Upload-Length": "4", "Upload-Metadata": metadata(target="/model/m/v1")}
            assert (await c.post("/uploads", headers={**create_headers, **TUS})).status_code == 401
            assert (await c.post("/uploads", headers={**create_headers, **auth["reader"]})).status_code == 403
            assert (await c.options("/uploads")).status_code == 204  # capabilities are public
            r = await c.post("/uploads", headers={**create_headers, **auth["writer"]})
            assert r.status_code == 201, r.text
            url = r.headers["location"]
            part = {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
            assert (await c.head(url, headers=auth["reader"])).status_code == 403
            assert (await c.patch(url, content=b"data", headers={**part, **auth["reader"]})).status_code == 403
            assert (await c.patch(url, content=b"data", headers={**part, **auth["other"]})).status_code == 403
            assert (await c.delete(url, headers=auth["other"])).status_code == 403
            r = await c.patch(url, content=b"data", headers={**part, **auth["writer"]})
            assert r.status_code == 204, r.text
            got = await c.get("/model/m/v1", headers=auth["reader"])
            assert got.content == b"data"
            trail = await c.get("/audit", headers=auth["writer"])
            assert trail.status_code == 403  # (admin only) the entry's key is checked in the raw store below
        entry = await app.state.db.collection("audit").find_one({"method": "PUT", "path": "/model/m/v1"})
        assert entry is not None and entry["key_id"] == "writer"


# --- the target: resolved to its item and attached through the repository, as its PUT does ----------


def test_every_file_put_route_is_a_target(app):
    """The targets the completion knows are exactly the API's file PUT routes (the ones that stream a file)."""
    paths = app.openapi()["paths"]
    file_puts = {path for path, ops in paths.items() if ops.get("put", {}).get(STREAMED_UPLOAD)}
    assert len(file_puts) == 5
    assert {route.template for route in TARGETS} == file_puts


async def test_a_refused_target_answers_what_its_put_answers(client):
    """Creation refuses a target with the status and detail the target's own PUT gives (404, 409, 422)."""
    from tests.helpers import make_task

    await make_task(client)
    result = {"model_name": "digits", "model_version": "v1", "training_id": "r1", "configuration_id": "7"}
    assert (await client.post("/training-results", json={**result, "results": {}})).status_code == 201
    assert (await client.post("/tasks/t1/checkpoints", json={"round": 1, "loss": 0.5})).status_code == 201
    assert (await upload(client, "/tasks/t1/checkpoints/1", b"npz")).status_code == 204
    refused = {
        "/model/digits/v9": 404,
        "/strategy/nothing": 404,
        "/transformation/nothing": 404,
        "/training-results/digits/v1/r9/7": 404,
        "/training-results/digits/v1/r1/8": 409,  # not the result's configuration id
        "/tasks/t1/checkpoints/1": 409,  # has its file: immutable
        "/tasks/t1/checkpoints/2": 404,
        "/tasks/nothing/checkpoints/1": 404,
        "/model/%24where/v1": 422,
        "/tasks/t1/checkpoints/0": 422,
        "/tasks/t1/checkpoints/x": 422,
    }
    for target, status in refused.items():
        put = await client.put(target, content=b"abcd", headers={"Content-Type": "application/octet-stream"})
        tus_answer = await create(client, target, 4)
        assert (put.status_code, tus_answer.status_code) == (status, status), (target, put.text, tus_answer.text)
        if status == 422:  # the same fields named (pydantic's wording aside)
            assert [e["loc"] for e in tus_answer.json()["detail"]] == [e["loc"] for e in put.json()["detail"]]
        else:
            assert tus_answer.json() == put.json(), target
    assert (await client.get("/uploads", headers=TUS)).json() == []  # nothing was created


async def test_a_completion_its_target_refuses_answers_409_and_the_upload_is_removed(client, raw_db):
    """A checkpoint that got its file by a PUT while the upload ran is immutable: the completion answers
    409 as a second PUT would, and the upload goes (its file with it)."""
    from tests.helpers import make_task

    await make_task(client)
    assert (await client.post("/tasks/t1/checkpoints", json={"round": 1, "loss": 0.5})).status_code == 201
    files, chunks = grid_counts(raw_db)
    url = await _upload_id(client, "/tasks/t1/checkpoints/1", 2000)
    assert (await patch(client, url, 0, payload(1000))).status_code == 204
    assert (await upload(client, "/tasks/t1/checkpoints/1", b"the PUT's own")).status_code == 204
    r = await patch(client, url, 1000, payload(1000))
    assert r.status_code == 409, r.text
    assert "immutable" in r.json()["detail"] and r.headers["tus-resumable"] == "1.0.0"
    assert (await client.head(url, headers=TUS)).status_code == 404
    assert (await client.get("/tasks/t1/checkpoints/1")).content == b"the PUT's own"
    assert grid_counts(raw_db) == (files + 1, chunks + 1)  # the PUT's file alone: the upload's went with it


async def test_the_completion_is_audited_as_its_targets_put(client):
    await make_model(client, "m", "v1")
    url = await _upload_id(client, "/model/m/v1", 4)
    before = [e for e in (await client.get("/audit")).json() if e["method"] == "PUT"]
    done = await patch(client, url, 0, b"data")
    assert done.status_code == 204, done.text
    puts = [e for e in (await client.get("/audit")).json() if e["method"] == "PUT"]
    assert len(puts) == len(before) + 1
    entry = puts[0]  # newest first
    assert (entry["path"], entry["status"]) == ("/model/m/v1", 204)
    assert entry["route"] == "/model/{model_name}/{model_version}"
    assert entry["request_id"] == done.headers["x-request-id"]
