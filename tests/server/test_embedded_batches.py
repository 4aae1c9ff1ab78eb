"""Reply batches are bounded by bytes, as MongoDB bounds them, on the embedded store.

MongoDB stops filling a find's or a getMore's batch before the document that would take it past
16 MiB (the largest BSON document; always at least one document) and keeps that document for the next
getMore. FerretDB v1 as released counts documents only: a getMore without a batch size got up to 250,
i.e. up to 65 MB of GridFS's 255 KiB chunks, over the driver's 48 MB message limit, so PyMongo's
`GridOut` read (`fs.get(id).read()`, what aerOS's orchestrator calls to fetch a model) failed for files
over ~71 MiB (101 chunks in the first batch, over 184 in the getMore), and a find's first batch (101
documents) of 1 MiB documents failed the same way.
tools/ferretdb/pushdown.patch bounds find, getMore and aggregate batches by bytes as MongoDB does
(tools/ferretdb/README.md, item 6). Every check here holds on MongoDB too. The client and
scratch-database fixtures are tests/server/conftest.py's.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import bson
from gridfs import GridFS
from pymongo.database import Database

MAX_BATCH = 16 * 1024 * 1024  # MongoDB's cap on a batch's documents (BSONObjMaxUserSize)
MIB = 1024 * 1024


def test_gridout_reads_an_80_mib_file_whole(scratch_db: Database) -> None:
    # 322 chunks of 255 KiB: a first batch of 101, then a getMore of the other 221 (57 MB) on
    # FerretDB as released, which failed from 72 MiB (185 chunks after the first batch: 48.3 MB).
    data = os.urandom(80 * MIB + 12_345)
    fs = GridFS(scratch_db)
    fid = fs.put(data, filename="model/big/1")
    # As aerOS's orchestrator reads a model: GridOut's find({files_id}).sort({n: 1}), no batch size.
    got = fs.get(fid).read()
    assert len(got) == len(data)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def _insert_large(db: Database, sizes: list[int]) -> dict[int, str]:
    """Documents {_id: i, pad: <sizes[i] random bytes>}, inserted a few at a time; their digests."""
    coll = db["large"]
    digests: dict[int, str] = {}
    batch: list[dict[str, Any]] = []
    for i, size in enumerate(sizes):
        pad = os.urandom(size)
        digests[i] = hashlib.sha256(pad).hexdigest()
        batch.append({"_id": i, "pad": pad})
        if sum(len(d["pad"]) for d in batch) > 24 * MIB:
            coll.insert_many(batch)
            batch = []
    if batch:
        coll.insert_many(batch)
    return digests


def _seen_once(docs: list[dict[str, Any]], digests: dict[int, str]) -> None:
    ids = [d["_id"] for d in docs]
    assert len(ids) == len(set(ids)), "a document came back twice"
    assert set(ids) == set(digests), "documents missing"
    for d in docs:
        assert hashlib.sha256(d["pad"]).hexdigest() == digests[d["_id"]], d["_id"]


def test_finds_of_large_documents_without_a_batch_size_return_each_once(scratch_db: Database) -> None:
    # 70 documents of 1 MiB: a first batch of 101 (70 MiB) and a getMore of 250 were both over 48 MB.
    digests = _insert_large(scratch_db, [MIB + 17 * i for i in range(70)])
    coll = scratch_db["large"]
    _seen_once(list(coll.find()), digests)
    # sorted in memory by the handler, and in reverse insertion order
    docs = list(coll.find().sort("_id", -1))
    assert [d["_id"] for d in docs] == sorted(digests, reverse=True)
    _seen_once(docs, digests)
    # an explicit batch size larger than 16 MiB holds is bounded too
    _seen_once(list(coll.find().batch_size(1000)), digests)
    _seen_once(list(coll.aggregate([{"$match": {}}])), digests)
    _seen_once(list(coll.aggregate([{"$match": {}}], batchSize=1000)), digests)


def _batches(db: Database, command: dict[str, Any], collection: str) -> list[list[dict[str, Any]]]:
    """The batches of a find or aggregate command and its getMores (none with a batch size)."""
    reply = db.command(command)
    batches = [reply["cursor"]["firstBatch"]]
    cursor_id = reply["cursor"]["id"]
    while cursor_id:
        reply = db.command("getMore", cursor_id, collection=collection)
        batches.append(reply["cursor"]["nextBatch"])
        cursor_id = reply["cursor"]["id"]
    return batches


def test_batches_stop_before_the_document_that_would_pass_16_mib(scratch_db: Database) -> None:
    # As MongoDB counts a batch (its array so far: 4 bytes, then per document a type byte, the index
    # as a C string and the document), the first two documents fill the find's 16 MiB exactly; the
    # third, one byte larger than the first, and the fourth do not fit one getMore. Then documents
    # just under 16 MiB alone, and a run of small ones after large ones.
    overhead = len(bson.encode({"_id": 0, "pad": b""}))
    first, second = 8 * MIB - 7, 8 * MIB  # encoded sizes: 4 + (1 + 2 + first) + (1 + 2 + second) = 16 MiB
    sizes = [first, second, first + 1, second, 15 * MIB, MAX_BATCH - 1024, 3 * MIB]
    sizes = [s - overhead for s in sizes] + [10] + [200_000] * 90
    digests = _insert_large(scratch_db, sizes)
    commands = (
        {"find": "large"},
        {"find": "large", "batchSize": 500},
        {"find": "large", "sort": {"_id": -1}},
        {"aggregate": "large", "pipeline": [], "cursor": {}},
        {"aggregate": "large", "pipeline": [], "cursor": {"batchSize": 500}},
    )
    for command in commands:
        batches = _batches(scratch_db, command, "large")
        sized = [[len(bson.encode(d)) for d in batch] for batch in batches]
        for batch in sized[:-1]:  # the last one may be empty (the cursor ended at a batch's end)
            assert batch, (command, sized)
        for batch in sized:
            assert len(batch) <= 1 or sum(batch) <= MAX_BATCH, (command, batch)
        docs = [d for batch in batches for d in batch]
        _seen_once(docs, digests)
        if "sort" in command:
            assert [d["_id"] for d in docs] == sorted(digests, reverse=True)
            continue
        assert [d["_id"] for d in docs] == sorted(digests), command  # insertion order, gap-free
        # MongoDB fills a batch as long as the next document fits, and only then
        assert sized[:5] == [[first, second], [first + 1], [second], [15 * MIB], [MAX_BATCH - 1024]], command
