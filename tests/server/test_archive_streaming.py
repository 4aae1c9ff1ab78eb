"""The all-models archive reads the database a batch of small fields at a time: documents (whose
`meta` may be large) are never all in memory, and batches continue exactly where the last one ended."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
import zipfile

import pytest

from flrepo.server.repository import models
from tests.helpers import make_model, upload

MiB = 1024 * 1024


async def _many(client, raw_db, count: int, meta_bytes: int) -> None:
    await make_model(client, "seed", "v1")
    await upload(client, "/model/seed/v1", b"weights", filename="w.bin")
    doc = raw_db[0]["models"].find_one({"model_name": "seed"}, {"_id": 0})
    doc["meta"]["blob"] = "m" * meta_bytes
    # Copies share the upload time: the batches must still continue by _id without skipping or repeating.
    raw_db[0]["models"].insert_many([{**doc, "model_name": f"m{n:03d}"} for n in range(count)])


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
async def test_archive_memory_does_not_grow_with_documents(client, raw_db, kind):
    await _many(client, raw_db, count=40, meta_bytes=600_000)  # 24 MB of meta
    tracemalloc.start()
    try:
        size = 0
        async with client.stream("GET", f"/models/download/shell/all.{kind}") as r:
            assert r.status_code == 200
            async for chunk in r.aiter_bytes():
                size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 41 * 7
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB for 24 MB of documents"


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
async def test_batches_continue_exactly(client, raw_db, monkeypatch, kind):
    monkeypatch.setattr(models, "ARCHIVE_BATCH", 7)
    await _many(client, raw_db, count=30, meta_bytes=10)
    r = await client.get(f"/models/download/shell/all.{kind}")
    if kind == "zip":
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            names = z.namelist()
    else:
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:*") as t:
            names = t.getnames()
    expected = {f"m{n:03d}/v1/w.bin" for n in range(30)} | {"seed/v1/w.bin"}
    assert len(names) == 31 and set(names) == expected


async def test_batches_reach_legacy_documents_without_an_upload_time(client, raw_db, monkeypatch):
    # aerOS documents carry no `uploaded_at`: they sort after dated ones, and a batch that ends on a
    # dated document must still continue into them.
    monkeypatch.setattr(models, "ARCHIVE_BATCH", 4)
    await _many(client, raw_db, count=10, meta_bytes=10)
    legacy = {"model_name": {"$in": [f"m{n:03d}" for n in range(5)]}}
    raw_db[0]["models"].update_many(legacy, {"$unset": {"uploaded_at": 1}})
    r = await client.get("/models/download/shell/all.tar")
    with tarfile.open(fileobj=io.BytesIO(r.content)) as t:
        names = t.getnames()
    assert sorted(names) == sorted({f"m{n:03d}/v1/w.bin" for n in range(10)} | {"seed/v1/w.bin"})
