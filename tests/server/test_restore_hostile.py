"""Restore refuses what the API would refuse, before writing anything, and never holds more than a
bounded manifest in memory (a small .tar.gz can expand to gigabytes)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import ObjectId, json_util
from pymongo import MongoClient

from flrepo.server.backup import ArchiveError, dump, restore
from flrepo.server.backup.format import JSON_OPTIONS, MANIFEST, SUMS, documents_sha256
from flrepo.server.main import create_app
from flrepo.server.settings import Settings
from tests.helpers import drop, make_model, make_settings, make_task, upload

MiB = 1024 * 1024


@pytest.fixture
def target(mongo_url: str) -> Iterator[Settings]:
    s = make_settings(mongo_url)
    yield s
    drop(s)


def _is_empty(settings: Settings) -> bool:
    with MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=2000) as c:
        meta, grid = c[settings.db_name], c[settings.gridfs_db_name]
        names = ("models", "results", "strategies", "transformations", "tasks")
        return all(meta[n].count_documents({}) == 0 for n in names) and grid["fs.files"].count_documents({}) == 0


def _rewrite(source: Path, dest: Path, edit: Callable[[dict[str, list[dict[str, Any]]]], None]) -> None:
    """The archive `source` with its documents edited, every digest recomputed: only the content is hostile."""
    with tarfile.open(source) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json_util.loads(members[MANIFEST], json_options=JSON_OPTIONS)
    edit(manifest["collections"])
    manifest["documents_sha256"] = {name: documents_sha256(docs) for name, docs in manifest["collections"].items()}
    members[MANIFEST] = json_util.dumps(manifest, json_options=JSON_OPTIONS).encode()
    lines = [f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in members.items() if name != SUMS]
    members[SUMS] = "".join(lines).encode()
    with tarfile.open(dest, "w:gz" if dest.name.endswith(".gz") else "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _set(collection: str, field: str, value: Any) -> Callable[[dict[str, list[dict[str, Any]]]], None]:
    def edit(collections: dict[str, list[dict[str, Any]]]) -> None:
        doc = collections[collection][0]
        holder, _, leaf = field.rpartition(".")
        for part in filter(None, holder.split(".")):
            doc = doc[int(part)] if part.isdigit() else doc[part]
        doc[leaf] = value

    return edit


async def _source(client) -> None:
    await make_model(client, "digits", "v1", library="numpy")
    await upload(client, "/model/digits/v1", b"weights")
    await make_task(client, "t1")  # a strategy and a transformation with files too


HOSTILE = {
    "dotdot name": _set("models", "model_name", "../../etc"),
    "slash name": _set("models", "model_version", "a/b"),
    "NUL name": _set("strategies", "strategy_name", "fed\x00avg"),
    "format character": _set("transformations", "id", "scale\u202e"),
    "non-NFC name": _set("models", "model_name", "cafe\u0301"),
    "number as name": _set("models", "model_name", 42),
    "meta not an object": _set("models", "meta", ["x"]),
    "missing library": _set("models", "meta", {"description": "no library"}),
    "NaN in meta": _set("strategies", "meta", {"lr": float("nan")}),
    "lone surrogate": _set("models", "meta.description", "\udc80"),
    "ObjectId in meta": _set("strategies", "meta", {"ref": ObjectId()}),
    "size as text": _set("models", "size", "big"),
    "task model name": _set("tasks", "model.model_name", ".."),
    "task phase": _set("tasks", "phase", "Exploded"),
    "dollar key": _set("strategies", "meta", {"$where": 1}),
}


@pytest.mark.parametrize("edit", HOSTILE.values(), ids=HOSTILE.keys())
async def test_documents_the_api_would_refuse_are_not_restored(client, settings, target, tmp_path, edit):
    await _source(client)
    await dump(settings, tmp_path / "good.tar.gz")
    _rewrite(tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz", edit)
    with pytest.raises(ArchiveError, match="would refuse"):
        await restore(target, tmp_path / "bad.tar.gz")
    assert _is_empty(target)
    with pytest.raises(ArchiveError, match="would refuse"):
        await restore(settings, tmp_path / "bad.tar.gz", force=True)  # a merge refuses it as well
    assert (await client.get("/model")).json()[0]["model_name"] == "digits"


async def test_the_reproduction_reads_still_work_after_a_refused_restore(client, settings, target, tmp_path):
    """Names with `../`, `/`, NUL and wrong types used to restore, then GET /model and GET /strategy
    answered 500 to everyone."""
    await _source(client)
    await dump(settings, tmp_path / "good.tar")

    def edit(collections: dict[str, list[dict[str, Any]]]) -> None:
        collections["models"][0].update(model_name="../x", model_version=7)
        collections["strategies"][0].update(strategy_name="a/b\x00", meta="not a dict")

    _rewrite(tmp_path / "good.tar", tmp_path / "bad.tar", edit)
    with pytest.raises(ArchiveError):
        await restore(target, tmp_path / "bad.tar")
    app = create_app(target)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as other:
            assert (await other.get("/model")).status_code == 200
            assert (await other.get("/strategy")).status_code == 200
    # The untouched archive restores.
    report = await restore(target, tmp_path / "good.tar")
    assert report.documents["models"] == 1


def _bomb(path: Path, manifest_bytes: int) -> None:
    """A .tar.gz whose manifest expands to `manifest_bytes` of JSON whitespace (a few hundred KB on disk)."""

    class Spaces(io.RawIOBase):
        def __init__(self, size: int) -> None:
            self.left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = b" " * n
            self.left -= n
            return n

    with gzip.open(path, "wb", compresslevel=1) as raw, tarfile.open(fileobj=raw, mode="w|") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = manifest_bytes
        tar.addfile(info, io.BufferedReader(Spaces(manifest_bytes), 1 * MiB))


def test_a_manifest_bomb_is_refused_without_expanding_it(target, tmp_path):
    """The reproduction: a 1.8 MB .tar.gz expanding to a 400 MiB manifest drove restore to 861 MiB."""
    import asyncio

    _bomb(tmp_path / "bomb.tar.gz", 400 * MiB)
    assert (tmp_path / "bomb.tar.gz").stat().st_size < 4 * MiB
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="FLREPO_RESTORE_MAX_MANIFEST_BYTES"):
            asyncio.run(restore(target, tmp_path / "bomb.tar.gz"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert _is_empty(target)


async def test_the_manifest_limit_is_a_setting(client, settings, mongo_url, tmp_path):
    await _source(client)
    await dump(settings, tmp_path / "repo.tar")
    small = make_settings(mongo_url, restore_max_manifest_bytes=1024)
    try:
        with pytest.raises(ArchiveError, match="over the 1024-byte limit"):
            await restore(small, tmp_path / "repo.tar")
        assert _is_empty(small)
        big_enough = make_settings(mongo_url, db_name=small.db_name, gridfs_db_name=small.gridfs_db_name)
        assert (await restore(big_enough, tmp_path / "repo.tar")).documents["models"] == 1
    finally:
        drop(small)


# --- tampering a digest cannot reveal (issue 28): the archive's own sums are recomputed each time ---------


async def _source_with_checkpoint(client) -> None:
    await _source(client)
    assert (await client.put("/tasks/t1/status", json={"phase": "Running"})).status_code == 200
    assert (await client.put("/tasks/t1/status", json={"round": {"round": 1, "loss": 0.5}})).status_code == 200
    assert (await client.post("/tasks/t1/checkpoints", json={"round": 1, "loss": 0.5})).status_code == 201
    assert (await upload(client, "/tasks/t1/checkpoints/1", b"round one")).status_code == 204


def _set_file(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        manifest["files"][0]["file"][field] = value

    return edit


def _rewrite_manifest(source: Path, dest: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Like _rewrite, with the whole manifest (its `files` too) to edit."""

    with tarfile.open(source) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json_util.loads(members[MANIFEST], json_options=JSON_OPTIONS)
    edit(manifest)
    members[MANIFEST] = json_util.dumps(manifest, json_options=JSON_OPTIONS).encode()
    lines = [f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in members.items() if name != SUMS]
    members[SUMS] = "".join(lines).encode()
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


TAMPERED = {
    "task id": _set("tasks", "task_id", "../x\x00y"),
    "checkpoint task id": _set("checkpoints", "task_id", "../x\x00y"),
    "round record task id": _set("task_rounds", "task_id", "../x\x00y"),
    "item sha256 lies": _set("models", "sha256", "0" * 64),
    "item size lies": _set("models", "size", 3),
    "checkpoint sha256 lies": _set("checkpoints", "sha256", "f" * 64),
    "null pins": _set("tasks", "pins", None),
    "null strategy pin": _set("tasks", "pins.strategy.sha256", None),
    "null transformation pin": _set("tasks", "pins.transformations.0.sha256", None),
}


@pytest.mark.parametrize("edit", TAMPERED.values(), ids=TAMPERED.keys())
async def test_tampered_documents_are_refused_with_nothing_written(client, settings, target, tmp_path, edit):
    await _source_with_checkpoint(client)
    await dump(settings, tmp_path / "good.tar")

    def whole(manifest: dict[str, Any]) -> None:
        edit(manifest["collections"])
        manifest["documents_sha256"] = {n: documents_sha256(d) for n, d in manifest["collections"].items()}

    _rewrite_manifest(tmp_path / "good.tar", tmp_path / "bad.tar", whole)
    with pytest.raises(ArchiveError, match="tampered"):
        await restore(target, tmp_path / "bad.tar")
    assert _is_empty(target)
    restored = await restore(target, tmp_path / "good.tar")  # the original restores
    assert restored.documents["checkpoints"] == 1 and restored.documents["task_rounds"] == 1


@pytest.mark.parametrize(
    "edit",
    [_set_file("chunkSize", -4), _set_file("chunkSize", 0), _set_file("chunkSize", 64 * MiB), _set_file("sha256", "0")],
    ids=["negative chunkSize", "zero chunkSize", "huge chunkSize", "file sha256 lies"],
)
async def test_tampered_files_are_refused_with_nothing_written(client, settings, target, tmp_path, edit):
    await _source_with_checkpoint(client)
    await dump(settings, tmp_path / "good.tar")
    _rewrite_manifest(tmp_path / "good.tar", tmp_path / "bad.tar", edit)
    with pytest.raises(ArchiveError, match="tampered"):
        await restore(target, tmp_path / "bad.tar")
    assert _is_empty(target)
