"""A database as aerOS 1.1.0 wrote it (tests.helpers.seed_aeros): every read path, replacements,
deletes, the archive, dump/restore, the sweep and `flrepo migrate` work over it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import gridfs
import httpx
import pytest
from bson import ObjectId

from flrepo.server.backup import dump, restore
from flrepo.server.main import create_app
from flrepo.server.repository.migrate import migrate
from flrepo.server.settings import Settings
from flrepo.server.storage.sweep import sweep
from tests.helpers import AerosData, drop, make_settings, payload, seed_aeros, sha, upload

# Download path of each seeded file.
DOWNLOADS = {
    "model base/base2": "/model/base/base2",
    "model test/0": "/model/test/0",
    "model oid/1": "/model/oid/1",
    "weights test/0/1": "/training-results/weights/test/0/1?encoding=raw",
    "strategy test-strategy": "/strategy/test-strategy",
    "transformation categorical": "/transformation/application.tests.categorical_transformation",
}


@pytest.fixture
def aeros(raw_db: tuple[Any, Any]) -> AerosData:
    return seed_aeros(raw_db)


def _by(items: list[dict[str, Any]], *keys: str) -> dict[Any, dict[str, Any]]:
    """Items by their key: a tuple of several fields, or one field's value."""
    return {tuple(item[k] for k in keys) if len(keys) > 1 else item[keys[0]]: item for item in items}


async def test_lists_and_gets_answer_200_with_the_aeros_fields(client, aeros):
    r = await client.get("/model")
    assert r.status_code == 200, r.text
    models = _by(r.json(), "model_name", "model_version")
    assert set(models) == {("base", "base2"), ("test", "0"), ("test", "1"), ("oid", "1")}
    assert models[("test", "0")]["meta"] is None and models[("test", "1")]["model_id"] is None
    assert models[("base", "base2")]["meta"]["library"] == "keras"
    assert models[("test", "0")]["model_id"] == str(aeros.ids["model test/0"])
    assert models[("oid", "1")]["model_id"] == str(aeros.ids["model oid/1"])  # an ObjectId, served as its text
    assert models[("test", "0")]["size"] is None and models[("test", "0")]["created_at"] is None

    trained = (await client.get("/model", params={"trained": "true"})).json()
    assert [(m["model_name"], m["model_version"]) for m in trained] == [("test", "0")]
    available = (await client.get("/models/with-files")).json()
    assert set(_by(available, "model_name", "model_version")) == {("base", "base2"), ("test", "0"), ("oid", "1")}
    r = await client.get("/model/meta", params={"model_name": "test", "model_version": "1"})
    assert r.status_code == 200 and r.json()["meta"] is None

    results = _by((await client.get("/training-results/test/0")).json(), "training_id")
    assert results["1"]["configuration_id"] is None and results["1"]["results"] == {"accuracy": "0.9"}
    assert results["2"]["results"] is None and results["2"]["weights_id"] is None
    assert len((await client.get("/training-results")).json()) == 2
    r = await client.get("/training-results/test/0/1")
    assert r.status_code == 200 and r.json()["weights_id"] == str(aeros.ids["weights test/0/1"])

    strategies = _by((await client.get("/strategy")).json(), "strategy_name")
    assert strategies["test-strategy"]["meta"] is None
    assert strategies["name_only"]["meta"] == {"rounds": "3"}
    assert (await client.get("/strategy/meta/test-strategy")).json()["strategy_description"] == "A test strategy"

    [transformation] = (await client.get("/transformation")).json()
    assert transformation["needs"]["storage"] is None and transformation["needs"]["preinstalled_libraries"] is None
    r = await client.get("/transformation/meta/application.tests.categorical_transformation")
    assert r.status_code == 200 and r.json()["storage_id"] == str(aeros.ids["transformation categorical"])

    assert (await client.get("/collector")).json()[0]["meta"] == {"framework": "flwr"}
    assert (await client.get("/collector/collector/1")).json()["name"] == "collector"


@pytest.mark.parametrize("label", sorted(DOWNLOADS))
async def test_legacy_files_stream_with_the_gridfs_length_and_no_etag(client, aeros, label):
    path, data = DOWNLOADS[label], aeros.files[label]
    r = await client.get(path)
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-length"] == str(len(data))
    assert "etag" not in r.headers  # no sha256 known yet (flrepo migrate adds it)
    assert "/" not in r.headers["content-disposition"].split("filename=")[1]  # not aerOS's path-like name
    head = await client.head(path)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    part = await client.get(path, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]


async def test_replacing_a_legacy_file_deletes_the_put_file(client, aeros, raw_db):
    fs = gridfs.GridFS(raw_db[1])
    new = payload(3000)
    assert (await upload(client, "/model/test/0", new)).status_code == 204
    assert not fs.exists(aeros.ids["model test/0"])
    r = await client.get("/model/test/0")
    assert r.content == new and r.headers["etag"] == f'"{sha(new)}"'

    # The ObjectId-holding model: replaced too, its id now stored as text.
    assert (await upload(client, "/model/oid/1", new)).status_code == 204
    assert not fs.exists(aeros.ids["model oid/1"])
    assert isinstance(raw_db[0].models.find_one({"model_name": "oid"})["model_id"], str)


async def test_weights_upload_fills_a_null_configuration_id(client, aeros, raw_db):
    assert (await upload(client, "/training-results/test/0/1/7", b"w1")).status_code == 204
    doc = (await client.get("/training-results/test/0/1")).json()
    assert doc["configuration_id"] == "7" and doc["size"] == 2
    assert not gridfs.GridFS(raw_db[1]).exists(aeros.ids["weights test/0/1"])
    # From then on the path must name that configuration, as for results created through flrepo.
    r = await upload(client, "/training-results/test/0/1/8", b"w2")
    assert r.status_code == 409 and "configuration_id" in r.json()["detail"]
    assert (await upload(client, "/training-results/test/0/2/3", b"w3")).status_code == 204


async def test_metadata_updates_of_legacy_items(client, aeros):
    r = await client.put("/model/meta/test/1", content=b'{"library": "pytorch"}')  # no Content-Type
    assert r.status_code == 204, r.text
    assert (await client.get("/model/meta?model_name=test&model_version=1")).json()["meta"]["library"] == "pytorch"
    r = await client.put("/strategy/meta/test-strategy", content=b'{"meta": {"Author": "Anonymous"}}')
    assert r.status_code == 204, r.text
    assert (await client.get("/strategy/meta/test-strategy")).json()["meta"] == {"Author": "Anonymous"}


async def test_deleting_legacy_items_deletes_their_files(client, aeros, raw_db):
    fs = gridfs.GridFS(raw_db[1])
    for label in ("model test/0", "model oid/1", "weights test/0/1", "strategy test-strategy"):
        path = DOWNLOADS[label].replace("/weights", "")
        r = await client.delete(path)
        assert r.status_code == 204, (path, r.text)
        assert not fs.exists(aeros.ids[label]), label
    r = await client.delete("/transformation/application.tests.categorical_transformation")
    assert r.status_code == 204 and not fs.exists(aeros.ids["transformation categorical"])
    assert (await client.delete("/model/test/1")).status_code == 204  # a legacy item without a file
    assert (await client.delete("/collector/collector/1")).status_code == 204
    assert [f._id for f in fs.find()] == [aeros.ids["model base/base2"]]


@pytest.mark.parametrize("name", ["all.zip", "all.tar"])
async def test_the_all_models_archive_holds_legacy_files(client, aeros, name):
    r = await client.get(f"/models/download/shell/{name}")
    assert r.status_code == 200 and r.headers["content-length"] == str(len(r.content))
    if name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
            assert archive.testzip() is None  # the CRC-32s computed for files stored without one
            files = {i.filename: archive.read(i) for i in archive.infolist()}
    else:
        with tarfile.open(fileobj=io.BytesIO(r.content)) as archive:
            files = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    assert files == {
        "base/base2/model.bin": aeros.files["model base/base2"],
        "test/0/model.bin": aeros.files["model test/0"],
        "oid/1/model.bin": aeros.files["model oid/1"],
    }


@pytest.fixture
def target(mongo_url: str) -> Iterator[Settings]:
    s = make_settings(mongo_url)
    yield s
    drop(s)


async def test_dump_and_restore_of_a_legacy_database(settings, target, aeros, tmp_path):
    archive = tmp_path / "aeros.tar.gz"
    report = await dump(settings, archive)
    assert report.files == len(DOWNLOADS) and report.documents["collectors"] == 1
    await restore(target, archive)
    app = create_app(target)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://flrepo.test") as restored:
            for label, path in DOWNLOADS.items():
                assert (await restored.get(path)).content == aeros.files[label], label
            models = _by((await restored.get("/model")).json(), "model_name", "model_version")
            assert models[("test", "0")]["meta"] is None and models[("test", "0")]["model_id"] == str(
                aeros.ids["model test/0"]
            )
            assert (await restored.get("/strategy")).json()[0]["meta"] is None


async def test_the_sweep_never_deletes_a_file_a_legacy_document_references(app, aeros, raw_db):
    meta, grid = raw_db
    fs = gridfs.GridFS(grid)
    orphan = fs.put(b"left behind", filename="model/gone/1")
    collector_file = fs.put(b"collector", filename="collector/c/2")
    meta.collectors.insert_one({"meta": None, "name": "c", "version": 2, "collector_id": str(collector_file)})
    report = await sweep(app.state.db, timedelta(0))
    assert report.orphan_files == 1 and not fs.exists(orphan)
    for label, file_id in aeros.ids.items():
        assert fs.exists(file_id), label
    assert fs.exists(collector_file)


async def test_migrate_backfills_and_etags_appear(client, app, aeros, raw_db):
    report = await migrate(app.state.db)
    assert report.clean and report.files_hashed == len(DOWNLOADS)
    assert report.bytes_hashed == sum(len(aeros.files[label]) for label in DOWNLOADS)
    assert report.ids_rewritten == 1  # the ObjectId of model oid/1
    for label, path in DOWNLOADS.items():
        r = await client.get(path)
        assert r.headers["etag"] == f'"{sha(aeros.files[label])}"', label
        # A resumed download of a migrated file is checked against the file it started with.
        stale = await client.get(path, headers={"Range": "bytes=1-", "If-Range": '"0000"'})
        assert stale.status_code == 200
    doc = (await client.get("/model/meta", params={"model_name": "test", "model_version": "0"})).json()
    assert doc["size"] == len(aeros.files["model test/0"]) and doc["sha256"] == sha(aeros.files["model test/0"])
    raw = raw_db[0].models.find_one({"model_name": "test", "model_version": "0"})
    assert raw["sha256"] == sha(aeros.files["model test/0"]) and isinstance(raw["crc32"], int)
    assert raw["uploaded_at"] is not None and raw["created_at"] == raw["_id"].generation_time.replace(tzinfo=None)
    assert raw["meta"] is None  # user data untouched
    assert raw_db[1]["fs.files"].find_one({"_id": aeros.ids["model test/0"]})["sha256"] == raw["sha256"]
    for collection in ("models", "results", "strategies", "transformations", "collectors"):
        assert raw_db[0][collection].count_documents({"created_at": None}) == 0, collection
    newest_first = [m["model_name"] for m in (await client.get("/models/with-files")).json()]
    assert newest_first == ["oid", "test", "base"]  # uploaded_at from GridFS: they now sort by upload

    again = await migrate(app.state.db)
    assert again.items == 0 and again.files_hashed == 0


async def test_migrate_resumes_after_an_interruption(app, aeros, raw_db):
    class Stop(Exception):
        pass

    seen: list[int] = []

    def stop_after_three(done: int, total: int, what: str) -> None:
        seen.append(total)
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        await migrate(app.state.db, stop_after_three)
    resumed = await migrate(app.state.db)
    assert resumed.items == seen[0] - 3 and resumed.clean
    assert raw_db[0].models.count_documents({"model_id": {"$ne": None}, "sha256": None}) == 0
    assert (await migrate(app.state.db)).items == 0


async def test_migrate_reports_missing_and_damaged_files_and_keeps_going(app, aeros, raw_db):
    meta, grid = raw_db
    meta.models.insert_one({"model_name": "lost", "model_version": "1", "model_id": str(ObjectId()), "meta": None})
    grid["fs.chunks"].delete_one({"files_id": aeros.ids["model base/base2"], "n": 1})
    report = await migrate(app.state.db)
    assert not report.clean
    assert any("'lost'" in line for line in report.missing_files)
    assert any("'base'" in line for line in report.damaged_files)
    assert report.files_hashed == len(DOWNLOADS) - 1
    lost = meta.models.find_one({"model_name": "lost"})
    assert lost["created_at"] is not None and "sha256" not in lost


async def test_duplicate_keys_from_aeros_do_not_stop_the_service(settings, raw_db):
    # aerOS had no unique index: two documents for one model are possible there.
    twice = [{"model_name": "d", "model_version": "1", "model_id": None, "meta": None} for _ in range(2)]
    raw_db[0].models.insert_many(twice)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://flrepo.test") as client:
            r = await client.get("/model")
            assert r.status_code == 200 and len(r.json()) == 2
            body = {"model_name": "d", "model_version": "1", "meta": {"library": "keras"}}
            assert (await client.post("/model", json=body)).status_code == 409
            assert (await client.post("/model", json={**body, "model_version": "2"})).status_code == 201
        report = await migrate(app.state.db)
    assert report.duplicates and "'d'" in report.duplicates[0] and not report.clean


def test_flrepo_migrate_command(settings: Settings, aeros: AerosData):
    env = {
        **os.environ,
        "FLREPO_MONGODB_URL": settings.mongodb_url,
        "FLREPO_DB_NAME": settings.db_name,
        "FLREPO_GRIDFS_DB_NAME": settings.gridfs_db_name,
        "FLREPO_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "flrepo.cli", "migrate"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{len(DOWNLOADS)} files hashed" in done.stdout
    assert f"[1/{done.stderr.count(chr(10))}]" in done.stderr  # a progress line per item
    again = subprocess.run([*cmd, "--quiet"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and again.stdout.startswith("0 items") and again.stderr == ""


def test_flrepo_migrate_exit_code_says_when_files_are_missing(settings: Settings, raw_db, tmp_path: Path):
    raw_db[0].models.insert_one({"model_name": "lost", "model_version": "1", "model_id": str(ObjectId()), "meta": None})
    env = {
        **os.environ,
        "FLREPO_MONGODB_URL": settings.mongodb_url,
        "FLREPO_DB_NAME": settings.db_name,
        "FLREPO_GRIDFS_DB_NAME": settings.gridfs_db_name,
    }
    cmd = [sys.executable, "-m", "flrepo.cli", "migrate", "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 6 and "missing file" in done.stdout


def test_the_sdk_reads_legacy_items(live_server, aeros):
    from flrepo.client import RepositoryClient

    with RepositoryClient(live_server.url) as repo:
        models = {(m.model_name, m.model_version): m for m in repo.list_models()}
        assert models[("test", "0")].meta is None and models[("test", "0")].model_id
        assert repo.get_model("test", "1").meta is None
        # No ETag to check against before `flrepo migrate`: the download is still whole.
        assert repo.read("/model/test/0") == aeros.files["model test/0"]
        assert [s.meta for s in repo.list_strategies() if s.strategy_name == "test-strategy"] == [None]
