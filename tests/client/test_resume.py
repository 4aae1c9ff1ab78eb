"""Downloads resume: from a part an earlier run left, and within a call after a dropped connection."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from flrepo.client import (
    Downloaded,
    Unavailable,
)
from flrepo.client.transfer import CHUNK
from tests.client.sdk import (
    BIG,
    FAST,
    FLAVOURS,
    Flaky,
    leftovers,
    run,
    sha,
)

# --- resume -------------------------------------------------------------------------------------


async def _model_with(c: Any, data: bytes, version: str = "v1") -> None:
    await run(c.create_model, "m", version, "numpy")
    await run(c.upload_model, "m", version, io.BytesIO(data))


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_resume_from_a_part_left_by_an_earlier_run(live_server, connect, tmp_path, flavour):
    data = os.urandom(BIG)
    etag = f'"{sha(data)}"'
    c = connect(flavour, live_server.url)
    await _model_with(c, data)
    have = CHUNK + 12345
    dest = tmp_path / "copy.bin"
    part, tag = tmp_path / "copy.bin.part", tmp_path / "copy.bin.part.etag"

    # The right part: only the rest travels.
    part.write_bytes(data[:have])
    tag.write_text(etag)
    transport = Flaky()
    seen: list[tuple[int, int | None]] = []
    r = connect(flavour, live_server.url, transport=transport)
    got = await run(r.download_model, "m", "v1", dest, progress=lambda *p: seen.append(p))
    assert got == Downloaded(dest, BIG, sha(data)) and dest.read_bytes() == data
    assert leftovers(tmp_path) == ["copy.bin"]
    [request] = transport.requests
    assert request.headers["range"] == f"bytes={have}-" and request.headers["if-range"] == etag
    assert transport.received == BIG - have
    assert seen[0][0] > have and seen[-1] == (BIG, BIG)

    # A part of another file (its ETag differs): the server sends the whole file, which replaces it.
    dest.unlink()
    part.write_bytes(os.urandom(have))
    tag.write_text(f'"{sha(b"another file")}"')
    transport = Flaky()
    r = connect(flavour, live_server.url, transport=transport)
    assert (await run(r.download_model, "m", "v1", dest)).sha256 == sha(data)
    assert dest.read_bytes() == data and transport.received == BIG and leftovers(tmp_path) == ["copy.bin"]

    # A part longer than the file (416): dropped, and the whole file fetched.
    dest.unlink()
    part.write_bytes(data + b"extra")
    tag.write_text(etag)
    transport = Flaky()
    r = connect(flavour, live_server.url, transport=transport)
    assert (await run(r.download_model, "m", "v1", dest)).size == BIG
    assert dest.read_bytes() == data and transport.received == BIG and leftovers(tmp_path) == ["copy.bin"]
    assert [q.headers.get("range") for q in transport.requests] == [f"bytes={BIG + 5}-", None]

    # resume=False ignores a good part.
    dest.unlink()
    part.write_bytes(data[:have])
    tag.write_text(etag)
    transport = Flaky()
    r = connect(flavour, live_server.url, transport=transport)
    assert (await run(r.download_model, "m", "v1", dest, resume=False)).size == BIG
    assert dest.read_bytes() == data and transport.received == BIG and "range" not in transport.requests[0].headers
    assert leftovers(tmp_path) == ["copy.bin"]

    # A part without its ETag sidecar cannot be trusted: the whole file comes.
    dest.unlink()
    part.write_bytes(data[:have])
    transport = Flaky()
    r = connect(flavour, live_server.url, transport=transport)
    await run(r.download_model, "m", "v1", dest)
    assert dest.read_bytes() == data and transport.received == BIG and leftovers(tmp_path) == ["copy.bin"]


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_dropped_download_resumes_within_the_call(live_server, connect, tmp_path, flavour):
    data = os.urandom(2 * CHUNK + 7)
    c = connect(flavour, live_server.url)
    await _model_with(c, data)
    for dest in (tmp_path / "copy.bin", io.BytesIO()):
        transport = Flaky([("cut", 700_000)])
        r = connect(flavour, live_server.url, transport=transport)
        got = await run(r.download_model, "m", "v1", dest)
        assert got.size == len(data) and got.sha256 == sha(data)
        written = dest.read_bytes() if isinstance(dest, Path) else dest.getvalue()
        assert written == data
        first, second = transport.requests
        assert "range" not in first.headers and second.headers["range"] == "bytes=700000-"
        assert transport.received == len(data)  # nothing fetched twice
    assert leftovers(tmp_path) == ["copy.bin"]


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_dropped_download_without_resume_is_still_complete(live_server, connect, tmp_path, flavour):
    data = os.urandom(2 * CHUNK + 7)
    c = connect(flavour, live_server.url)
    await _model_with(c, data)
    dest = tmp_path / "copy.bin"
    transport = Flaky([("cut", 700_000)])
    r = connect(flavour, live_server.url, transport=transport)
    # resume=False is about parts left by earlier calls; a cut within this call is still retried.
    got = await run(r.download_model, "m", "v1", dest, resume=False)
    assert len(transport.requests) == 2
    assert dest.stat().st_size == got.size == len(data) and dest.read_bytes() == data
    assert got.sha256 == sha(data) and leftovers(tmp_path) == ["copy.bin"]

    # A cut that exhausts the attempts: the call fails, and without resume no part stays behind.
    r = connect(flavour, live_server.url, transport=Flaky([("cut", 100_000)] * FAST.attempts))
    with pytest.raises(Unavailable):
        await run(r.download_model, "m", "v1", tmp_path / "again.bin", resume=False)
    assert leftovers(tmp_path) == ["copy.bin"]
    # With resume (the default) the part and its ETag stay for a later call, which fetches only the rest.
    r = connect(flavour, live_server.url, transport=Flaky([("cut", 100_000)] * FAST.attempts))
    with pytest.raises(Unavailable):
        await run(r.download_model, "m", "v1", tmp_path / "again.bin")
    assert leftovers(tmp_path) == ["again.bin.part", "again.bin.part.etag", "copy.bin"]
    assert (tmp_path / "again.bin.part").read_bytes() == data[: FAST.attempts * 100_000]
    transport = Flaky()
    r = connect(flavour, live_server.url, transport=transport)
    await run(r.download_model, "m", "v1", tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == data
    assert transport.received == len(data) - FAST.attempts * 100_000
