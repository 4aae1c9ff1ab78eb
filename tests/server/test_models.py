"""Models: metadata, files, lists, archives and the errors aerOS got wrong."""

from __future__ import annotations

import asyncio
import io
import tarfile
import zipfile

import pytest

from tests.helpers import CHUNK, grid_counts, make_model, payload, sha, upload


async def test_create_returns_document_and_duplicate_is_409(client):
    doc = await make_model(client, "base", "base2", description="CNN")
    assert doc["model_name"] == "base" and doc["model_version"] == "base2"
    assert doc["meta"] == {"library": "keras", "description": "CNN"}
    assert doc["model_id"] is None and doc["size"] is None
    r = await client.post("/model", json={"model_name": "base", "model_version": "base2", "meta": {"library": "x"}})
    assert r.status_code == 409
    assert "already exists" in r.json()["detail"]


async def test_empty_body_is_422_with_field_errors(client):
    r = await client.post("/model", json={})
    assert r.status_code == 422
    missing = {tuple(e["loc"])[-1] for e in r.json()["detail"]}
    assert {"model_name", "model_version", "meta"} <= missing


async def test_meta_library_required(client):
    r = await client.post("/model", json={"model_name": "a", "model_version": "1", "meta": {}})
    assert r.status_code == 422
    assert any("library" in e["loc"] for e in r.json()["detail"])


@pytest.mark.parametrize("bad", ["", "a/b", "$where", "nul\x00", "ctl\x1f", "x" * 129])
async def test_bad_identifiers_are_422(client, bad):
    r = await client.post("/model", json={"model_name": bad, "model_version": "v", "meta": {"library": "k"}})
    assert r.status_code == 422, r.text


async def test_identifier_of_128_chars_is_fine(client):
    await make_model(client, "x" * 128, "v")


@pytest.mark.parametrize("key", ["$set", "a.b"])
async def test_operator_keys_in_meta_are_422(client, key):
    r = await client.post("/model", json={"model_name": "a", "model_version": "v", "meta": {"library": "k", key: 1}})
    assert r.status_code == 422, r.text
    nested = {"library": "k", "deep": {key: 1}}
    r = await client.post("/model", json={"model_name": "a", "model_version": "v", "meta": nested})
    assert r.status_code == 422, r.text


async def test_unknown_model_is_404_json_everywhere(client):
    for method, path in [
        ("GET", "/model/nope/v1"),
        ("HEAD", "/model/nope/v1"),
        ("DELETE", "/model/nope/v1"),
        ("GET", "/model/meta?model_name=nope&model_version=v1"),
    ]:
        r = await client.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
        if method != "HEAD":
            assert "not found" in r.json()["detail"]
    r = await upload(client, "/model/nope/v1", b"x")
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    r = await client.put("/model/meta/nope/v1", json={"library": "k"})
    assert r.status_code == 404


async def test_model_without_file_is_404(client):
    await make_model(client)
    r = await client.get("/model/m/v1")
    assert r.status_code == 404
    assert "no file" in r.json()["detail"]


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 20 * 1024 * 1024])
async def test_file_round_trip(client, raw_db, size):
    await make_model(client)
    data = payload(size)
    r = await upload(client, "/model/m/v1", data, filename="weights.h5")
    assert r.status_code == 204, r.text
    r = await client.get("/model/m/v1")
    assert r.status_code == 200
    assert sha(r.content) == sha(data)
    assert r.headers["content-length"] == str(size)
    assert r.headers["etag"] == f'"{sha(data)}"'
    assert 'filename="weights.h5"' in r.headers["content-disposition"]
    assert r.headers["content-type"] == "application/octet-stream"
    assert "content-encoding" not in r.headers
    meta = (await client.get("/model/meta", params={"model_name": "m", "model_version": "v1"})).json()
    assert meta["size"] == size and meta["sha256"] == sha(data) and meta["filename"] == "weights.h5"
    assert meta["content_type"] == "application/octet-stream" and meta["uploaded_at"]
    assert isinstance(meta["model_id"], str)
    files = list(raw_db[1]["fs.files"].find())
    assert [str(f["_id"]) for f in files] == [meta["model_id"]]
    assert files[0]["length"] == size


async def test_raw_octet_stream_upload(client):
    await make_model(client)
    data = payload(1000)
    r = await client.put(
        "/model/m/v1", content=data, headers={"content-type": "application/octet-stream", "x-filename": "raw.bin"}
    )
    assert r.status_code == 204, r.text
    r = await client.get("/model/m/v1")
    assert r.content == data and 'filename="raw.bin"' in r.headers["content-disposition"]


async def test_multipart_without_file_field_is_422(client, raw_db):
    await make_model(client)
    r = await client.put("/model/m/v1", files={"other": ("a.bin", b"abc")})
    assert r.status_code == 422
    assert "'file'" in r.json()["detail"]
    assert grid_counts(raw_db) == (0, 0)


async def test_path_in_filename_is_dropped(client):
    await make_model(client)
    await upload(client, "/model/m/v1", b"abc", filename="../../etc/passwd")
    meta = (await client.get("/model/meta", params={"model_name": "m", "model_version": "v1"})).json()
    assert meta["filename"] == "passwd"


async def test_replacement_leaves_one_file(client, raw_db):
    await make_model(client)
    for i in range(3):
        data = payload(CHUNK * 2 + i)
        assert (await upload(client, "/model/m/v1", data)).status_code == 204
    r = await client.get("/model/m/v1")
    assert r.content == data
    files, chunks = grid_counts(raw_db)
    assert files == 1 and chunks == 3


async def test_head_and_ranges(client):
    await make_model(client)
    data = payload(1000)
    await upload(client, "/model/m/v1", data)
    r = await client.head("/model/m/v1")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == "1000" and r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == f'"{sha(data)}"'

    cases = {"bytes=0-9": (0, 9), "bytes=990-": (990, 999), "bytes=-5": (995, 999), "bytes=500-5000": (500, 999)}
    for header, (start, end) in cases.items():
        r = await client.get("/model/m/v1", headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == data[start : end + 1], header
        assert r.headers["content-range"] == f"bytes {start}-{end}/1000"
        assert r.headers["content-length"] == str(end - start + 1)

    r = await client.get("/model/m/v1", headers={"Range": "bytes=1000-"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */1000"
    # A multi-range request gets the whole file, which RFC 9110 allows.
    r = await client.get("/model/m/v1", headers={"Range": "bytes=0-1,5-6"})
    assert r.status_code == 200 and r.content == data


async def test_if_range_resumes_only_the_same_file(client):
    await make_model(client)
    data = payload(1000)
    await upload(client, "/model/m/v1", data)
    same = {"Range": "bytes=600-", "If-Range": f'"{sha(data)}"'}
    r = await client.get("/model/m/v1", headers=same)
    assert r.status_code == 206 and r.content == data[600:]
    # The file changed since the client started: the whole new file, not a splice of two.
    r = await client.get("/model/m/v1", headers={"Range": "bytes=600-", "If-Range": '"0000"'})
    assert r.status_code == 200 and r.content == data


async def test_range_across_chunk_boundary(client):
    await make_model(client)
    data = payload(CHUNK * 3)
    await upload(client, "/model/m/v1", data)
    start, end = CHUNK - 10, 2 * CHUNK + 10
    r = await client.get("/model/m/v1", headers={"Range": f"bytes={start}-{end}"})
    assert r.status_code == 206 and r.content == data[start : end + 1]


async def test_update_meta_accepts_both_shapes(client):
    await make_model(client)
    r = await client.put("/model/meta/m/v1", json={"library": "pytorch", "description": "new"})
    assert r.status_code == 204, r.text
    meta = (await client.get("/model/meta", params={"model_name": "m", "model_version": "v1"})).json()["meta"]
    assert meta == {"library": "pytorch", "description": "new"}
    r = await client.put("/model/meta/m/v1", json={"meta": {"library": "keras", "layers": 3}})
    assert r.status_code == 204
    meta = (await client.get("/model/meta", params={"model_name": "m", "model_version": "v1"})).json()["meta"]
    assert meta == {"library": "keras", "layers": 3, "description": None}
    r = await client.put("/model/meta/m/v1", json={"description": "no library"})
    assert r.status_code == 422
    r = await client.put("/model/meta/m/v1", json={"library": "k", "$inc": 1})
    assert r.status_code == 422


async def test_get_meta_requires_query_params(client):
    r = await client.get("/model/meta", params={"model_name": "m"})
    assert r.status_code == 422


async def test_list_paging_and_total(client, app):
    for i in range(5):
        await make_model(client, f"m{i}")
    r = await client.get("/model")
    assert r.status_code == 200 and r.headers["x-total-count"] == "5"
    assert [d["model_name"] for d in r.json()] == [f"m{i}" for i in range(5)]
    r = await client.get("/model", params={"limit": 2, "offset": 3})
    assert [d["model_name"] for d in r.json()] == ["m3", "m4"] and r.headers["x-total-count"] == "5"
    r = await client.get("/model", params={"limit": 0})
    assert r.status_code == 422
    r = await client.get("/model", params={"offset": -1})
    assert r.status_code == 422
    app.state.settings.list_cap = 3
    r = await client.get("/model")
    assert len(r.json()) == 3 and r.headers["x-total-count"] == "5"
    r = await client.get("/model", params={"limit": 4})
    assert r.status_code == 422 and "at most 3" in r.json()["detail"]


async def test_list_trained_filter(client):
    for name in ("a", "b", "c"):
        await make_model(client, name)
    result = {"model_name": "b", "model_version": "v1", "training_id": "1", "configuration_id": "1", "results": {}}
    assert (await client.post("/training-results", json=result)).status_code == 201
    names = lambda r: [d["model_name"] for d in r.json()]  # noqa: E731
    assert names(await client.get("/model", params={"trained": "true"})) == ["b"]
    assert names(await client.get("/model", params={"trained": "false"})) == ["a", "c"]
    assert names(await client.get("/model")) == ["a", "b", "c"]


async def test_list_trained_with_no_results(client):
    await make_model(client, "a")
    r = await client.get("/model", params={"trained": "true"})
    assert r.json() == [] and r.headers["x-total-count"] == "0"
    assert len((await client.get("/model", params={"trained": "false"})).json()) == 1


async def test_delete_removes_file(client, raw_db):
    await make_model(client)
    await upload(client, "/model/m/v1", payload(CHUNK + 5))
    assert grid_counts(raw_db) == (1, 2)
    r = await client.delete("/model/m/v1")
    assert r.status_code == 204
    assert grid_counts(raw_db) == (0, 0)
    assert (await client.delete("/model/m/v1")).status_code == 404
    assert (await client.get("/model/m/v1")).status_code == 404


async def test_available_newest_first(client):
    for name in ("old", "none", "new"):
        await make_model(client, name)
    await upload(client, "/model/old/v1", b"1")
    await asyncio.sleep(0.01)
    await upload(client, "/model/new/v1", b"2")
    r = await client.get("/models/with-files")
    assert [d["model_name"] for d in r.json()] == ["new", "old"]
    assert r.headers["x-total-count"] == "2"


async def _two_available(client):
    files = {}
    for name in ("first", "second"):
        await make_model(client, name)
        files[name] = payload(CHUNK + 7)
        await upload(client, f"/model/{name}/v1", files[name], filename=f"{name}.bin")
        await asyncio.sleep(0.01)
    await make_model(client, "nofile")
    return files


async def test_download_all_as_zip(client):
    files = await _two_available(client)
    r = await client.get("/models/download/shell/all.zip")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert 'filename="all.zip"' in r.headers["content-disposition"]
    assert r.headers["content-length"] == str(len(r.content))
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert z.testzip() is None
        assert z.namelist() == ["second/v1/second.bin", "first/v1/first.bin"]
        assert z.read("first/v1/first.bin") == files["first"]


async def test_download_all_as_tar_and_tgz(client):
    files = await _two_available(client)
    for name, mode, ctype in [("all.tar", "r:", "application/x-tar"), ("all.tar.gz", "r:gz", "application/gzip")]:
        r = await client.get(f"/models/download/shell/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == ctype
        if name.endswith(".tar"):  # announced up front, exact
            assert r.headers["content-length"] == str(len(r.content)) and len(r.content) % tarfile.RECORDSIZE == 0
        with tarfile.open(fileobj=io.BytesIO(r.content), mode=mode) as t:
            assert t.getnames() == ["second/v1/second.bin", "first/v1/first.bin"]
            assert t.extractfile("second/v1/second.bin").read() == files["second"]


async def test_download_all_when_empty(client):
    r = await client.get("/models/download/shell/none.zip")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert z.namelist() == []


async def test_zip_of_file_without_recorded_crc(client, raw_db):
    await make_model(client)
    data = payload(3000)
    await upload(client, "/model/m/v1", data, filename="w.bin")
    # Files restored from aerOS carry no CRC-32; the archive computes it.
    raw_db[0]["models"].update_one({"model_name": "m"}, {"$unset": {"crc32": ""}})
    r = await client.get("/models/download/shell/x.zip")
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert z.testzip() is None and z.read("m/v1/w.bin") == data


async def test_upload_over_limit_is_413_and_nothing_stored(client, app, raw_db):
    await make_model(client)
    old = payload(100)
    await upload(client, "/model/m/v1", old)
    app.state.settings.max_upload_bytes = 1000
    # Content-Length far over the limit: refused before reading.
    r = await upload(client, "/model/m/v1", payload(200_000))
    assert r.status_code == 413, r.text
    # Slightly over: refused while streaming, chunks removed.
    r = await upload(client, "/model/m/v1", payload(1001))
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = await client.put("/model/m/v1", content=payload(5000), headers={"content-type": "application/octet-stream"})
    assert r.status_code == 413
    assert grid_counts(raw_db) == (1, 1)
    assert (await client.get("/model/m/v1")).content == old


async def test_concurrent_creates_one_wins(client):
    body = {"model_name": "race", "model_version": "v1", "meta": {"library": "k"}}
    responses = await asyncio.gather(*(client.post("/model", json=body) for _ in range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 1 and codes.count(409) == 19


async def test_concurrent_uploads_leave_one_whole_file(client, raw_db):
    await make_model(client)
    blobs = [payload(CHUNK + 1 + i) for i in range(8)]
    responses = await asyncio.gather(*(upload(client, "/model/m/v1", b) for b in blobs))
    assert all(r.status_code == 204 for r in responses)
    r = await client.get("/model/m/v1")
    assert r.content in blobs
    meta = (await client.get("/model/meta", params={"model_name": "m", "model_version": "v1"})).json()
    assert meta["sha256"] == sha(r.content)
    files, chunks = grid_counts(raw_db)
    assert files == 1 and chunks == 2


async def test_undecodable_body_is_422_not_400(client):
    r = await client.post("/model", content=b"\x11\x06(\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not UTF-8" in str(r.json()["detail"])
    r = await client.post("/model", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


async def test_download_is_always_octet_stream(client):
    await make_model(client)
    r = await client.put("/model/m/v1", files={"file": ("page.html", b"<script>alert(1)</script>", "text/html")})
    assert r.status_code == 204
    r = await client.get("/model/m/v1")
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith("attachment;")
    meta = (await client.get("/model/meta", params={"model_name": "m", "model_version": "v1"})).json()
    assert meta["content_type"] == "text/html"  # recorded, never echoed


async def test_values_the_store_cannot_hold_are_422(client, app):
    r = await client.post(
        "/model", json={"model_name": "a", "model_version": "v", "meta": {"library": "k", "c1\x9c": 1}}
    )
    assert r.status_code == 422, r.text
    grid = {"library": "k", "grid": [[1, 2], [3, 4]]}
    r = await client.post("/model", json={"model_name": "g", "model_version": "v", "meta": grid})
    if app.state.db.dialect.nested_arrays:  # MongoDB holds arrays of arrays
        assert r.status_code == 201 and r.json()["meta"]["grid"] == [[1, 2], [3, 4]]
    else:  # FerretDB does not: refused with a reason, nothing stored
        assert r.status_code == 422 and "arrays" in r.json()["detail"]
        assert (await client.get("/model/meta", params={"model_name": "g", "model_version": "v"})).status_code == 404
    ok = {"library": "k", "grid": [{"row": [1, 2]}, {"row": [3, 4]}]}
    assert (await client.post("/model", json={"model_name": "a", "model_version": "v", "meta": ok})).status_code == 201


async def test_metadata_updates_during_uploads_lose_neither(client, raw_db):
    # Where the store rewrites the whole document on an update (FerretDB), a metadata update read
    # before a file switch and written after it put the replaced (and deleted) file's id back: 404.
    await make_model(client)
    blobs = [payload(CHUNK + 1 + i) for i in range(6)]
    libraries = [f"lib{i}" for i in range(6)]
    uploads = [upload(client, "/model/m/v1", b) for b in blobs]
    updates = [[client.put("/model/meta/m/v1", json={"library": name}) for _ in range(10)] for name in libraries]
    responses = await asyncio.gather(*(call for u, ups in zip(uploads, updates, strict=True) for call in (u, *ups)))
    assert all(r.status_code == 204 for r in responses), [r.text for r in responses if r.status_code != 204]
    r = await client.get("/model/m/v1")
    assert r.status_code == 200 and r.content in blobs
    meta = (await client.get("/model/meta", params={"model_name": "m", "model_version": "v1"})).json()
    assert meta["sha256"] == sha(r.content) and meta["meta"]["library"] in libraries
    files, _ = grid_counts(raw_db)
    assert files == 1  # the file it points at, and no other
