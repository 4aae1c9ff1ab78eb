"""GridFS file names as aerOS 1.1.0 writes them (`fs.put(data, filename=f'model/{name}/{version}')`,
`weights/{name}/{version}/{configuration_id}` with `training_id`, `strategy/{name}`,
`transformation/{id}`), for every way flrepo stores a file, and after `flrepo migrate` of a database an
earlier flrepo wrote (which named GridFS files after the uploaded file)."""

from __future__ import annotations

from typing import Any

import gridfs
from bson import ObjectId

from flrepo.server.repository.migrate import migrate
from tests.helpers import make_model, make_task_references, payload, seed_aeros, upload
from tests.server.test_uploads_tus import create, patch


async def _store_one_of_each(client: Any) -> dict[str, bytes]:
    """An item of every aerOS kind with a file uploaded as aerOS clients upload it (multipart `file`)."""
    files = {name: payload(1000 + i) for i, name in enumerate(("model", "weights", "strategy", "transformation"))}
    await make_model(client, "classification", "base2")
    r = await upload(client, "/model/classification/base2", files["model"], "migration_predictor_v1.zip")
    assert r.status_code == 204, r.text
    body = {"model_name": "classification", "model_version": "base2", "training_id": "3", "configuration_id": "7"}
    body["results"] = {}
    assert (await client.post("/training-results", json=body)).status_code == 201
    r = await upload(client, "/training-results/classification/base2/3/7", files["weights"], "aggregated-weights.pkl")
    assert r.status_code == 204, r.text
    assert (await client.post("/strategy", json={"strategy_name": "fedavg", "meta": {}})).status_code == 201
    assert (await upload(client, "/strategy/fedavg", files["strategy"], "strategy.pkl")).status_code == 204
    t = {"id": "scale", "parameter_types": {}, "default_values": {}, "outputs": [], "needs": {}}
    assert (await client.post("/transformation", json=t)).status_code == 201
    assert (await upload(client, "/transformation/scale", files["transformation"], "scale.pkl")).status_code == 204
    return files


AEROS_NAMES = {
    "model": "model/classification/base2",
    "weights": "weights/classification/base2/7",
    "strategy": "strategy/fedavg",
    "transformation": "transformation/scale",
}
UPLOADED_NAMES = {
    "model": ("/model/classification/base2", "migration_predictor_v1.zip"),
    "weights": ("/training-results/weights/classification/base2/3?encoding=raw", "aggregated-weights.pkl"),
    "strategy": ("/strategy/fedavg", "strategy.pkl"),
    "transformation": ("/transformation/scale", "scale.pkl"),
}


async def _assert_aeros_layout(client: Any, raw_db: tuple[Any, Any], files: dict[str, bytes]) -> None:
    grid = raw_db[1]
    for label, name in AEROS_NAMES.items():
        [file_doc] = grid["fs.files"].find({"filename": name}).to_list()
        # As aerOS's orchestrator reads a model: find the file by its name, then gridfs.get.
        assert gridfs.GridFS(grid).get(file_doc["_id"]).read() == files[label], label
        path, uploaded = UPLOADED_NAMES[label]
        r = await client.get(path)
        assert r.status_code == 200 and r.content == files[label], label
        assert f'filename="{uploaded}"' in r.headers["content-disposition"], label
    weights = grid["fs.files"].find_one({"filename": AEROS_NAMES["weights"]})
    assert weights["training_id"] == "3"  # a string, as aerOS's `training_id=f'{training_id}'`
    assert grid["fs.files"].count_documents({}) == len(AEROS_NAMES)
    meta = (await client.get("/model/meta", params={"model_name": "classification", "model_version": "base2"})).json()
    assert meta["filename"] == "migration_predictor_v1.zip"  # the uploaded name stays on the item


async def test_every_upload_gets_the_aeros_gridfs_name(client, raw_db):
    files = await _store_one_of_each(client)
    await _assert_aeros_layout(client, raw_db, files)


async def test_a_replacement_and_a_tus_upload_get_the_aeros_name(client, raw_db):
    await make_model(client, "classification", "base2")
    assert (await upload(client, "/model/classification/base2", b"first", "a.zip")).status_code == 204
    data = payload(300 * 1024)
    r = await create(client, "/model/classification/base2", len(data), filename="resumed.zip")
    assert r.status_code == 201, r.text
    assert (await patch(client, r.headers["location"], 0, data)).status_code == 204
    [file_doc] = raw_db[1]["fs.files"].find().to_list()  # the replaced file is gone
    assert file_doc["filename"] == "model/classification/base2"
    assert gridfs.GridFS(raw_db[1]).get(file_doc["_id"]).read() == data
    r = await client.get("/model/classification/base2")
    assert r.content == data and 'filename="resumed.zip"' in r.headers["content-disposition"]


async def test_an_unattached_tus_upload_is_named_after_the_upload(client, raw_db):
    """A finished upload whose target refuses it keeps the name of its upload until it is removed."""
    await make_model(client, "m", "v1")
    r = await create(client, "/model/m/v1", 4, filename="x.bin")
    url = r.headers["location"]
    assert (await client.delete("/model/m/v1")).status_code == 204
    assert (await patch(client, url, 0, b"abcd")).status_code in (404, 409)
    names = [doc["filename"] for doc in raw_db[1]["fs.files"].find()]
    assert all(name == "upload/" + url.rsplit("/", 1)[1] for name in names)


async def test_checkpoints_are_named_by_task_and_round(client, raw_db):
    await make_task_references(client)
    plan = {"task_id": "t1", "model": {"model_name": "digits", "model_version": "v1"}}
    plan |= {"strategy": {"strategy_name": "fedavg"}}
    plan |= {"transformations": [{"id": "scale", "parameters": {}}], "rounds": 3, "min_participants": 1}
    assert (await client.post("/tasks", json=plan)).status_code == 201, "task"
    assert (await client.put("/tasks/t1/status", json={"phase": "Running"})).status_code == 200
    assert (await client.post("/tasks/t1/checkpoints", json={"round": 2, "loss": 0.5})).status_code == 201
    assert (await upload(client, "/tasks/t1/checkpoints/2", b"npz", "w.npz")).status_code == 204
    file_doc = raw_db[1]["fs.files"].find_one({"filename": "checkpoint/t1/2"})
    assert file_doc is not None and gridfs.GridFS(raw_db[1]).get(file_doc["_id"]).read() == b"npz"


def _as_an_earlier_flrepo_wrote_it(raw_db: tuple[Any, Any]) -> None:
    """Earlier flrepo versions named each GridFS file after the uploaded file and wrote no training_id."""
    meta, grid = raw_db
    from flrepo.server.storage.db import FILE_FIELDS

    for collection, field in FILE_FIELDS.items():
        for doc in meta[collection].find({field: {"$ne": None}}):
            grid["fs.files"].update_one(
                {"_id": ObjectId(doc[field])}, {"$set": {"filename": doc["filename"]}, "$unset": {"training_id": ""}}
            )


async def test_migrate_gives_an_earlier_flrepo_database_the_aeros_names(client, app, raw_db):
    files = await _store_one_of_each(client)
    _as_an_earlier_flrepo_wrote_it(raw_db)
    assert raw_db[1]["fs.files"].count_documents({"filename": {"$in": list(AEROS_NAMES.values())}}) == 0
    lines: list[str] = []
    report = await migrate(app.state.db, lambda n, total, what: lines.append(what))
    assert report.files_renamed == 4 and report.clean
    assert "files given their aerOS names" in report.summary()
    assert any("GridFS file named weights/classification/base2/7" in line for line in lines)
    await _assert_aeros_layout(client, raw_db, files)
    assert (await migrate(app.state.db)).files_renamed == 0  # idempotent


async def test_migrate_keeps_the_names_aeros_wrote(app, raw_db):
    """aerOS named weights by the configuration in the upload's path even where the result's
    configuration_id is null: such a name is kept, and nothing aerOS wrote is renamed."""
    aeros = seed_aeros(raw_db)
    before = {doc["_id"]: (doc["filename"], doc.get("training_id")) for doc in raw_db[1]["fs.files"].find()}
    report = await migrate(app.state.db)
    assert report.files_renamed == 0
    after = {doc["_id"]: (doc["filename"], doc.get("training_id")) for doc in raw_db[1]["fs.files"].find()}
    assert after == before
    assert after[aeros.ids["weights test/0/1"]] == ("weights/test/0/1", "1")


# --- what aerOS 1.1.0 answers on its paths ------------------------------------------------------


def aeros_available_body(grid: Any) -> bytes:
    """aerOS 1.1.0's `GET /models/available`, computed as its code computes it over the same GridFS:
    `list(fs.files.find({}, {'_id': 0}).sort('uploadDate', 1))` through FastAPI 0.83's
    `jsonable_encoder` (datetime -> `.isoformat()`, with the naive times of aerOS's default MongoClient)
    and Starlette 0.19's JSONResponse.render."""
    import json
    from datetime import datetime

    def encode(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [encode(v) for v in value]
        return value.isoformat() if isinstance(value, datetime) else value

    docs = list(grid["fs.files"].find({}, {"_id": 0}).sort("uploadDate", 1))
    return json.dumps(encode(docs), ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


async def test_models_available_is_aeros_body_byte_for_byte(client, raw_db, settings):
    """Over a database aerOS wrote (files put by aerOS's own `GridFS.put` calls) and over files flrepo wrote."""
    from pymongo import MongoClient

    seed_aeros(raw_db)
    await _store_one_of_each(client)
    with MongoClient(settings.mongodb_url) as naive:  # aerOS's client: tz_aware=False
        expected = aeros_available_body(naive[settings.gridfs_db_name])
    r = await client.get("/models/available")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == expected
    listed = r.json()
    assert [doc["uploadDate"] for doc in listed] == sorted(doc["uploadDate"] for doc in listed)
    assert all("_id" not in doc for doc in listed)
    # What aerOS's GUI does with it (fl-ui tableComponent.vue): split the name, pick weights by training_id.
    weights = [doc for doc in listed if doc["filename"].split("/")[0] == "weights"]
    assert {(d["filename"].split("/")[1], d["filename"].split("/")[2], d["training_id"]) for d in weights} == {
        ("test", "0", "1"),
        ("classification", "base2", "3"),
    }


async def test_models_available_leaves_out_what_aeros_never_had(client, raw_db):
    await test_checkpoints_are_named_by_task_and_round(client, raw_db)
    names = [doc["filename"] for doc in (await client.get("/models/available")).json()]
    assert sorted(names) == ["strategy/fedavg", "transformation/scale"]
    assert (await client.get("/models/available")).content.count(b"checkpoint/") == 0


async def test_an_empty_repository_answers_an_empty_list(client):
    r = await client.get("/models/available")
    assert r.status_code == 200 and r.content == b"[]"


async def test_models_with_files_is_flreposs_view(client):
    await make_model(client, "old", "1")
    await make_model(client, "new", "1")
    await make_model(client, "empty", "1")
    assert (await upload(client, "/model/old/1", b"o", "o.bin")).status_code == 204
    assert (await upload(client, "/model/new/1", b"n", "n.bin")).status_code == 204
    r = await client.get("/models/with-files")
    assert [m["model_name"] for m in r.json()] == ["new", "old"] and r.headers["x-total-count"] == "2"
    assert r.json()[0]["filename"] == "n.bin"


async def test_weights_answer_aeros_base64_byte_for_byte_and_raw_when_asked(client):
    import base64

    body = {"model_name": "m", "model_version": "v", "training_id": "1", "configuration_id": "1", "results": {}}
    assert (await client.post("/training-results", json=body)).status_code == 201
    path = "/training-results/weights/m/v/1"
    for size in (0, 1, 2, 3, 255 * 1024 + 1, 2 * 255 * 1024 + 2):
        data = payload(size)
        assert (await upload(client, "/training-results/m/v/1/1", data, "w.pkl")).status_code == 204
        r = await client.get(path)
        # aerOS: `Response(content=base64.b64encode(fs.get(ObjectId(model_id)).read()))`
        assert r.status_code == 200 and r.content == base64.b64encode(data), size
        assert r.headers["content-length"] == str(len(r.content))
        for raw in ({"params": {"encoding": "raw"}}, {"headers": {"Accept": "application/octet-stream"}}):
            r = await client.get(path, **raw)
            assert r.status_code == 200 and r.content == data, raw
            assert r.headers["content-type"] == "application/octet-stream" and "etag" in r.headers
    # `*/*`, which every HTTP client sends, is no request for the raw bytes.
    assert (await client.get(path, headers={"Accept": "*/*"})).content == base64.b64encode(data)
    assert (await client.get(path, params={"encoding": "base64"})).content == base64.b64encode(data)
    r = await client.get(path, params={"encoding": "raw"}, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == data[:10]
    assert (await client.get(path, params={"encoding": "nonsense"})).status_code == 422


async def test_the_guis_shell_download_finds_the_newest_weights_of_a_configuration(client, raw_db):
    """fl-ui's `recieveName` calls `/models/download/shell/{name}/{version}/{configid}` (through fl-api's
    `modelShell`), splits the answer's `filename` and downloads the weights of its `training_id`."""
    import base64

    await _store_one_of_each(client)
    r = await client.get("/models/download/shell/classification/base2/7")
    assert r.status_code == 200
    [doc] = r.json()
    assert doc["filename"].split("/")[1:3] == ["classification", "base2"] and doc["training_id"] == "3"
    weights = await client.get(f"/training-results/weights/classification/base2/{doc['training_id']}")
    raw = await client.get("/training-results/weights/classification/base2/3", params={"encoding": "raw"})
    assert base64.b64decode(weights.content) == raw.content
    assert (await client.get("/models/download/shell/classification/base2/8")).json() == []
    # The one-segment form stays flrepo's archive of every model.
    assert (await client.get("/models/download/shell/all.zip")).content[:2] == b"PK"
