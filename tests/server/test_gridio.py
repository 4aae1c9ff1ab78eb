"""Our GridFS writer/reader against the standard layout: each reads what the other wrote."""

from __future__ import annotations

import os

import pytest

from flrepo.server.storage import gridfs as gridio
from flrepo.server.storage.gridfs import GridWriter, find_file, read_range

CHUNK = 1024


async def _collect(grid, doc, start, length):
    return b"".join([part async for part in read_range(grid, doc, start, length)])


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 5 * CHUNK + 17])
async def test_writer_output_is_standard_gridfs(app, size):
    db = app.state.db
    data = os.urandom(size)
    writer = GridWriter(db.grid, "f.bin", CHUNK, {"k": 1})
    for i in range(0, size, 300):  # writes that do not line up with chunks
        await writer.write(data[i : i + 300])
    await writer.close(sha256="x")
    grid_out = await db.bucket.open_download_stream(writer.file_id)
    assert await grid_out.read() == data
    doc = await find_file(db.grid, writer.file_id)
    assert doc["length"] == size and doc["sha256"] == "x" and doc["metadata"] == {"k": 1}
    assert await _collect(db.grid, doc, 0, size) == data


async def test_reader_handles_files_from_other_gridfs_writers_and_ranges(app):
    db = app.state.db
    data = os.urandom(7 * CHUNK + 3)
    file_id = await db.bucket.upload_from_stream("other.bin", data, chunk_size_bytes=CHUNK)
    doc = await find_file(db.grid, file_id)
    writer = GridWriter(db.grid, "ours.bin", CHUNK, None)
    await writer.write(data)
    await writer.close()
    ours = await find_file(db.grid, writer.file_id)
    for start, length in [(0, len(data)), (5, 10), (CHUNK - 1, 2), (CHUNK, CHUNK), (3 * CHUNK + 7, 4 * CHUNK - 4)]:
        expected = data[start : start + length]
        assert await _collect(db.grid, doc, start, length) == expected, (start, length)
        assert await _collect(db.grid, ours, start, length) == expected, (start, length)


async def test_missing_chunk_is_an_error_not_short_data(app, raw_db):
    db = app.state.db
    writer = GridWriter(db.grid, "f.bin", CHUNK, None)
    await writer.write(os.urandom(3 * CHUNK))
    await writer.close()
    raw_db[1]["fs.chunks"].delete_one({"_id": gridio.chunk_id(writer.file_id, 1)})
    doc = await find_file(db.grid, writer.file_id)
    with pytest.raises(OSError, match="missing chunk 1"):
        await _collect(db.grid, doc, 0, 3 * CHUNK)


async def test_abort_removes_written_chunks(app, raw_db):
    db = app.state.db
    writer = GridWriter(db.grid, "f.bin", CHUNK, None)
    for _ in range(2 * gridio.WRITE_BATCH_CHUNKS + 1):  # a batch is stored while the next one fills
        await writer.write(os.urandom(CHUNK))
    assert raw_db[1]["fs.chunks"].count_documents({"files_id": writer.file_id}) > 0
    await writer.abort()
    assert raw_db[1]["fs.chunks"].count_documents({"files_id": writer.file_id}) == 0
    assert await find_file(db.grid, writer.file_id) is None
