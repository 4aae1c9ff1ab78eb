"""Streaming uploads and verified downloads; a corrupted file; what an upload returns."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile

import cloudpickle
import pytest

from flrepo.client import (
    Downloaded,
    IntegrityError,
    NotFound,
    RepositoryError,
    Stored,
    calls,
)
from flrepo.client.transfer import CHUNK
from tests.client.sdk import (
    BIG,
    FLAVOURS,
    EditedPutAnswers,
    corrupt_stored_file,
    leftovers,
    pipe_with,
    run,
    sha,
)

# --- streaming transfers ------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_streaming_uploads_and_downloads(live_server, connect, tmp_path, flavour):
    c = connect(flavour, live_server.url)
    for version in ("path", "bytesio", "open", "pipe"):
        await run(c.create_model, "m", version, "numpy")
    data = os.urandom(BIG)
    source = tmp_path / "weights.bin"
    source.write_bytes(data)

    # From a path: 1 MiB pieces, progress ends at (size, size).
    seen: list[tuple[int, int | None]] = []
    await run(c.upload_model, "m", "path", source, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(CHUNK, BIG), (2 * CHUNK, BIG), (3 * CHUNK, BIG), (BIG, BIG)]
    stored = await run(c.get_model, "m", "path")
    assert (stored.size, stored.sha256, stored.filename) == (BIG, sha(data), "weights.bin")

    # From a BytesIO positioned after a header: only what follows is sent.
    buffer = io.BytesIO(b"HEADER" + data)
    buffer.seek(6)
    seen.clear()
    await run(c.upload_model, "m", "bytesio", buffer, filename="from-memory.bin", progress=lambda *p: seen.append(p))
    assert seen[-1] == (BIG, BIG)
    stored = await run(c.get_model, "m", "bytesio")
    assert (stored.sha256, stored.filename) == (sha(data), "from-memory.bin")

    # From an open file: its name is the default filename.
    with source.open("rb") as handle:
        await run(c.upload_model, "m", "open", handle)
    assert (await run(c.get_model, "m", "open")).filename == "weights.bin"

    # From a pipe: the size is unknown, sent chunked.
    small = os.urandom(50_000)
    seen.clear()
    with pipe_with(small) as pipe:
        await run(c.upload_model, "m", "pipe", pipe, filename="piped.bin", progress=lambda *p: seen.append(p))
    assert seen[-1] == (len(small), None)
    stored = await run(c.get_model, "m", "pipe")
    assert (stored.size, stored.sha256, stored.filename) == (len(small), sha(small), "piped.bin")

    # To a path, with progress.
    seen.clear()
    dest = tmp_path / "out" / "copy.bin"
    dest.parent.mkdir()
    got = await run(c.download_model, "m", "path", dest, progress=lambda *p: seen.append(p))
    assert isinstance(got, Downloaded) and got == Downloaded(dest, BIG, sha(data))
    assert dest.read_bytes() == data and leftovers(dest.parent) == ["copy.bin"]
    assert seen[-1] == (BIG, BIG) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # ... as a str path, replacing what is there.
    dest.write_bytes(b"old")
    assert (await run(c.download_model, "m", "bytesio", str(dest))).path == dest and dest.read_bytes() == data

    # To file objects: a BytesIO (after what it already holds) and an open file.
    sink = io.BytesIO()
    sink.write(b"KEEP")
    got = await run(c.download_model, "m", "open", sink)
    assert got == Downloaded(None, BIG, sha(data)) and sink.getvalue() == b"KEEP" + data
    with (tmp_path / "opened.bin").open("wb") as handle:
        got = await run(c.download_model, "m", "pipe", handle)
    assert got.path is None and (tmp_path / "opened.bin").read_bytes() == small
    assert await run(c.read, calls.model_file("m", "pipe")) == small

    # The generic pair, on any file path.
    await run(c.upload, calls.model_file("m", "pipe"), io.BytesIO(b"replaced"), filename="r.bin")
    sink = io.BytesIO()
    assert (await run(c.download, calls.model_file("m", "pipe"), sink)).size == 8 and sink.getvalue() == b"replaced"

    # Every model file in one archive.
    archive = tmp_path / "models.zip"
    await run(c.download_models_archive, "models.zip", archive)
    with zipfile.ZipFile(archive) as z:
        assert len(z.namelist()) == 4
        assert sorted(hashlib.sha256(z.read(name)).hexdigest() for name in z.namelist()) == sorted(
            [sha(data)] * 3 + [sha(b"replaced")]
        )
    tar_bytes = io.BytesIO()
    await run(c.download_models_archive, "models.tar", tar_bytes)
    tar_bytes.seek(0)
    with tarfile.open(fileobj=tar_bytes) as tar:
        assert len(tar.getnames()) == 4


# --- integrity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_corrupted_file_raises_and_leaves_nothing(live_server, raw_db, connect, tmp_path, flavour):
    data = os.urandom(600_000)  # three GridFS chunks
    c = connect(flavour, live_server.url)
    await run(c.create_model, "m", "v1", "numpy")
    await run(c.upload_model, "m", "v1", io.BytesIO(data), filename="victim.bin")
    await run(c.create_strategy, "s")
    await run(c.upload_strategy, "s", io.BytesIO(cloudpickle.dumps({"x": 1})), filename="strategy.pkl")
    corrupt_stored_file(raw_db, "victim.bin")
    corrupt_stored_file(raw_db, "strategy.pkl")

    dest = tmp_path / "copy.bin"
    with pytest.raises(IntegrityError, match="ETag") as bad:
        await run(c.download_model, "m", "v1", dest)
    assert isinstance(bad.value, RepositoryError) and sha(data) in str(bad.value)
    assert bad.value.request_id and bad.value.request_id in str(bad.value)  # the GET that brought the bytes
    assert leftovers(tmp_path) == []  # neither copy.bin, copy.bin.part nor copy.bin.part.etag

    sink = io.BytesIO()
    sink.write(b"KEEP")
    with pytest.raises(IntegrityError):
        await run(c.download_model, "m", "v1", sink)
    assert sink.getvalue() == b"KEEP"  # rewound to where it started and cut there

    with pytest.raises(IntegrityError):
        await run(c.read, calls.model_file("m", "v1"))
    with pytest.raises(IntegrityError):
        await run(c.load_strategy, "s")  # caught before anything is unpickled
    with pytest.raises(IntegrityError):
        await run(c.download_strategy, "s", tmp_path / "s.pkl")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_uploads_return_what_was_stored(live_server, connect, tmp_path, flavour):
    c = connect(flavour, live_server.url)
    data = os.urandom(CHUNK + 99)
    source = tmp_path / "w.bin"
    source.write_bytes(data)
    await run(c.create_model, "m", "v1", "numpy")
    expected = Stored(len(data), sha(data))

    # Whatever this server answers (an ETag or not), the result is the stored file's.
    assert await run(c.upload_model, "m", "v1", source) == expected
    item = await run(c.get_model, "m", "v1")
    assert (item.size, item.sha256) == (expected.size, expected.sha256)
    assert await run(c.stat_file, calls.model_file("m", "v1")) == expected

    # An answer with the ETag: nothing more is asked.
    transport = EditedPutAnswers(f'"{sha(data)}"')
    r = connect(flavour, live_server.url, transport=transport)
    assert await run(r.upload_model, "m", "v1", io.BytesIO(data)) == expected
    assert [q.method for q in transport.requests] == ["PUT"]
    # An ETag that is not what was sent: the server stored something else.
    r = connect(flavour, live_server.url, transport=EditedPutAnswers(f'"{sha(b"other")}"'))
    with pytest.raises(IntegrityError, match="stored sha256"):
        await run(r.upload_model, "m", "v1", io.BytesIO(data))
    # No ETag: a HEAD of the file's download path says what is stored.
    transport = EditedPutAnswers(None)
    r = connect(flavour, live_server.url, transport=transport)
    assert await run(r.upload_model, "m", "v1", source) == expected
    assert [(q.method, q.url.path) for q in transport.requests] == [("PUT", "/model/m/v1"), ("HEAD", "/model/m/v1")]
    await run(c.create_training_result, "m", "v1", "r1", {"loss": 1})
    transport.requests.clear()
    assert await run(r.upload_weights, "m", "v1", "r1", "1", io.BytesIO(b"weights")) == Stored(7, sha(b"weights"))
    assert transport.requests[-1].url.path == "/training-results/weights/m/v1/r1"
    await run(c.create_strategy, "s")
    assert await run(r.upload_strategy, "s", io.BytesIO(b"code"), sign=False) == Stored(4, sha(b"code"))
    # The generic upload to a path without HEAD: the bytes that were sent and accepted.
    stored = await run(r.upload, calls.weights_upload("m", "v1", "r1", "1"), io.BytesIO(b"again"))
    assert stored == Stored(5, sha(b"again")) == await run(c.stat_file, calls.weights_download("m", "v1", "r1"))
    with pytest.raises(NotFound):
        await run(c.stat_file, calls.model_file("m", "v9"))
