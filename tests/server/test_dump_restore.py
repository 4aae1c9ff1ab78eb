"""flrepo dump / restore: a full round trip into an empty database, refusals, corrupt archives."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from flrepo.server.backup import ArchiveError, TargetNotEmptyError, dump, restore
from flrepo.server.main import create_app
from flrepo.server.settings import Settings
from tests.helpers import CHUNK, drop, make_model, make_settings, payload, sha, upload

COLLECTIONS = ("models", "results", "strategies", "transformations", "tasks", "checkpoints", "collectors")
TRANSFORMATION = {
    "id": "scale",
    "description": "standard scaling",
    "parameter_types": {"with_mean": "bool"},
    "default_values": {"with_mean": True},
    "outputs": ["np.ndarray"],
    "needs": {"storage": 0, "RAM": 0, "GPU": False, "preinstalled_libraries": {}, "available_models": {}},
}
RESULT = {
    "model_name": "digits",
    "model_version": "v1",
    "training_id": "1",
    "configuration_id": "1",
    "results": {"rounds": "3", "final_loss": 0.41, "converged": True},
}
PLAN = {
    "task_id": "t1",
    "model": {"model_name": "digits", "model_version": "v1"},
    "strategy": {"strategy_name": "fedavg"},
    "transformations": [{"id": "scale", "parameters": {"with_mean": False}}],
    "rounds": 3,
    "min_participants": 2,
}


@pytest.fixture
def target(mongo_url: str) -> Iterator[Settings]:
    """A second, empty database pair to restore into."""
    s = make_settings(mongo_url)
    yield s
    drop(s)


async def _populate(client: httpx.AsyncClient) -> dict[str, bytes]:
    """Items of every collection; files: multi-chunk, one byte over a chunk, empty, small. Returns path -> bytes."""
    files = {
        "/model/digits/v1": payload(2 * CHUNK + 12345),
        "/model/digits/v2": payload(CHUNK + 1),
        "/training-results/weights/digits/v1/1?encoding=raw": payload(CHUNK // 2),
        "/strategy/fedavg": b"",
        "/transformation/scale": b"pickled transformation",
        "/tasks/t1/checkpoints/1": b"round one weights",
    }
    await make_model(client, "digits", "v1", library="numpy", description="logistic regression")
    await make_model(client, "digits", "v2", library="keras")
    await make_model(client, "no-file", "v1")  # a document without a file survives too
    assert (await upload(client, "/model/digits/v1", b"an old version replaced below")).status_code == 204
    assert (await upload(client, "/model/digits/v1", files["/model/digits/v1"], "digits.pkl")).status_code == 204
    assert (await upload(client, "/model/digits/v2", files["/model/digits/v2"])).status_code == 204
    assert (await client.post("/training-results", json=RESULT)).status_code == 201
    weights = files["/training-results/weights/digits/v1/1?encoding=raw"]
    assert (await upload(client, "/training-results/digits/v1/1/1", weights)).status_code == 204
    assert (await client.post("/strategy", json={"strategy_name": "fedavg", "meta": {"k": 1}})).status_code == 201
    assert (await upload(client, "/strategy/fedavg", files["/strategy/fedavg"], "empty.pkl")).status_code == 204
    assert (await client.post("/transformation", json=TRANSFORMATION)).status_code == 201
    assert (await upload(client, "/transformation/scale", files["/transformation/scale"])).status_code == 204
    r = await client.post("/tasks", json=PLAN)
    assert r.status_code == 201, r.text
    assert (await client.put("/tasks/t1/status", json={"phase": "Running"})).status_code == 200
    assert (await client.post("/tasks/t1/checkpoints", json={"round": 1, "loss": 0.5})).status_code == 201
    assert (await upload(client, "/tasks/t1/checkpoints/1", files["/tasks/t1/checkpoints/1"])).status_code == 204
    assert (await client.post("/collector", json={"name": "flower", "version": 1, "meta": {}})).status_code == 201
    return files


def _snapshot(settings: Settings) -> dict[str, Any]:
    """Every document of every dumped collection, every fs.files document, every file's sha256."""
    with MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=2000, tz_aware=True) as c:
        meta, grid = c[settings.db_name], c[settings.gridfs_db_name]
        snap: dict[str, Any] = {name: list(meta[name].find().sort("_id", 1)) for name in COLLECTIONS}
        snap["fs.files"] = list(grid["fs.files"].find().sort("_id", 1))
        digests = {}
        for f in snap["fs.files"]:
            h = hashlib.sha256()
            for chunk in grid["fs.chunks"].find({"files_id": f["_id"]}).sort("n", 1):
                h.update(chunk["data"])
            digests[f["_id"]] = h.hexdigest()
        snap["sha256"] = digests
        return snap


def _is_empty(settings: Settings) -> bool:
    with MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=2000) as c:
        meta, grid = c[settings.db_name], c[settings.gridfs_db_name]
        return all(meta[n].count_documents({}) == 0 for n in COLLECTIONS) and all(
            grid[n].count_documents({}) == 0 for n in ("fs.files", "fs.chunks")
        )


async def test_round_trip_into_an_empty_database(client, settings, target, tmp_path: Path):
    files = await _populate(client)
    archive = tmp_path / "repo.tar"
    report = await dump(settings, archive)
    expected = {"models": 3, "results": 1, "strategies": 1, "transformations": 1, "tasks": 1, "checkpoints": 1}
    assert report.documents == {**expected, "collectors": 1, "task_rounds": 0}
    assert report.files == 6 and report.file_bytes == sum(len(b) for b in files.values())
    assert not (tmp_path / "repo.tar.partial").exists()

    restored = await restore(target, archive)
    assert restored.documents == report.documents and restored.files == 6

    source, copy = _snapshot(settings), _snapshot(target)
    for name in (*COLLECTIONS, "fs.files"):
        assert copy[name] == source[name], name  # every field, _id and date included
    assert copy["sha256"] == source["sha256"]
    assert sorted(copy["sha256"].values()) == sorted(sha(b) for b in files.values())

    # The restored deployment serves the very same bytes through the API.
    app = create_app(target)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://restored.test") as c:
            for path, data in files.items():
                r = await c.get(path)
                assert r.status_code == 200, path
                assert sha(r.content) == sha(data), path
            assert (await c.get("/model/meta", params={"model_name": "digits", "model_version": "v1"})).json()["meta"][
                "library"
            ] == "numpy"


async def test_restore_refuses_a_non_empty_database_unless_forced(client, settings, target, tmp_path: Path):
    files = await _populate(client)
    archive = tmp_path / "repo.tar.gz"  # the compressed variant as well
    await dump(settings, archive)
    with pytest.raises(TargetNotEmptyError):
        await restore(settings, archive)

    # Merge: the archive's version of digits/v1 comes back, items only in the target stay.
    await upload(client, "/model/digits/v1", b"changed after the dump")
    await make_model(client, "newer", "v1")
    before = _snapshot(settings)
    report = await restore(settings, archive, force=True)
    assert report.replaced == 9 and report.files_already_present == 5  # every dumped item; all files but one
    after = _snapshot(settings)
    assert len(after["models"]) == 4
    r = await client.get("/model/digits/v1")
    assert sha(r.content) == sha(files["/model/digits/v1"])
    # The file uploaded after the dump was replaced and deleted: no leak.
    assert len(after["fs.files"]) == len(before["fs.files"]) == 6


def _flip_byte_in(archive: Path, member_name: str) -> None:
    with tarfile.open(archive) as tar:
        member = tar.getmember(member_name)
        offset = member.offset_data + member.size // 2
    with archive.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize("member", ["files/000001", "manifest.json"])
async def test_corrupt_archive_is_refused_and_nothing_is_written(client, settings, target, tmp_path: Path, member):
    await _populate(client)
    archive = tmp_path / "repo.tar"
    await dump(settings, archive)
    _flip_byte_in(archive, member)
    with pytest.raises(ArchiveError, match="sha256"):
        await restore(target, archive)
    assert _is_empty(target)
    with MongoClient(target.mongodb_url, serverSelectionTimeoutMS=2000) as c:
        # Not even indexes: the target databases were never touched.
        assert target.db_name not in c.list_database_names()
        assert target.gridfs_db_name not in c.list_database_names()


async def test_truncated_or_foreign_archives_are_refused(client, settings, target, tmp_path: Path):
    await _populate(client)
    await dump(settings, tmp_path / "repo.tar.gz")
    await dump(settings, tmp_path / "repo.tar")
    data = (tmp_path / "repo.tar.gz").read_bytes()
    assert data[:2] == b"\x1f\x8b"  # gzip, chosen by the name
    for cut in (1 / 3, 2 / 3, 0.999):  # 0.999: only the gzip trailer and tar padding are lost
        (tmp_path / "cut.tar.gz").write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(ArchiveError, match="truncated"):
            await restore(target, tmp_path / "cut.tar.gz")
    plain = (tmp_path / "repo.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(plain[: len(plain) // 2])
    with pytest.raises(ArchiveError):
        await restore(target, tmp_path / "cut.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    for name in ("junk.tar", "absent.tar"):
        with pytest.raises(ArchiveError):
            await restore(target, tmp_path / name)
    assert _is_empty(target)


async def test_an_empty_repository_round_trips(settings, target, tmp_path: Path):
    await dump(settings, tmp_path / "empty.tar")
    report = await restore(target, tmp_path / "empty.tar")
    assert report.files == 0 and set(report.documents.values()) == {0}
    assert _is_empty(target)
