"""GridFS's sorted chunk read is answered from the index in numeric order, streamed, on the embedded store.

PyMongo's GridOut (aerOS's orchestrator: `fs.get(id).read()`) reads a file with
`find({files_id: X}).sort({n: 1})`. tools/ferretdb/pushdown.patch has FerretDB apply that sort in its
SQLite backend (sort_pushdown.go) instead of decoding and sorting every chunk of the file in memory;
`explain` reports it as `sortPushdown`. The index holds JSON text, whose order is not numeric
('10' < '2'), so these tests check the order on thousands of values and on mixed types, beside the
flag, and that whatever is not pushed down is still sorted as MongoDB sorts. On MongoDB the same
queries must sort from the index (no SORT stage). The client and scratch-database fixtures are
tests/server/conftest.py's (every database here is its own and dropped), the plan helpers
test_embedded_indexes.py's.
"""

from __future__ import annotations

import operator
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import Int64, ObjectId, Timestamp
from gridfs import GridFS, GridFSBucket
from pymongo import ASCENDING
from pymongo.database import Database

from .test_embedded_indexes import _stages, is_ferretdb

CHUNKS = 20_001  # n = 0 ... 20000: 2 < 10 < 100 < 1000 < 10000 numerically, not as text


def sort_pushed_down(db: Database, collection: str, flt: dict[str, Any], sort: dict[str, int]) -> bool:
    """Whether the store answers the sort from an index: FerretDB's sortPushdown (with its plan's index
    search), MongoDB's winning plan without a SORT stage."""
    find = {"find": collection, "filter": flt, "sort": sort}
    if is_ferretdb(db.client):
        explained = db.command("explain", find)
        if explained["sortPushdown"]:
            details = [row.split("detail=", 1)[1] for row in explained["queryPlanner"]["Plan"]]
            assert any(" USING INDEX " in d for d in details), details
            assert not any(d.startswith("SCAN ") for d in details), details
        return bool(explained["sortPushdown"])
    explained = db.command("explain", find, verbosity="queryPlanner")
    stages = set(_stages(explained["queryPlanner"]["winningPlan"]))
    return "SORT" not in stages and "COLLSCAN" not in stages


@pytest.fixture
def chunks(scratch_db: Database) -> ObjectId:
    """CHUNKS chunks of one file, inserted in a shuffled order, beside another file's."""
    coll = scratch_db["fs.chunks"]
    coll.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
    fid, other = ObjectId(), ObjectId()
    order = list(range(CHUNKS))
    random.Random(21).shuffle(order)
    for start in range(0, CHUNKS, 2000):
        coll.insert_many([{"files_id": fid, "n": n, "data": b"x"} for n in order[start : start + 2000]])
    coll.insert_many([{"files_id": other, "n": n, "data": b"y"} for n in range(30)])
    return fid


def test_the_gridout_chunk_query_returns_chunks_in_numeric_order_from_the_index(
    scratch_db: Database, chunks: ObjectId
) -> None:
    coll = scratch_db["fs.chunks"]
    assert sort_pushed_down(scratch_db, "fs.chunks", {"files_id": chunks}, {"n": 1})
    got = [c["n"] for c in coll.find({"files_id": chunks}, {"_id": 0, "n": 1}).sort([("n", 1)]).batch_size(1000)]
    assert got == list(range(CHUNKS))
    # GridOut's resume after a lost cursor, and the service's own range read on MongoDB
    for flt in ({"$gte": 9}, {"$gte": 9, "$lt": 12}, {"$gt": 99.5, "$lte": 101}, {"$gte": 19_990, "$lt": 1e300}):
        full = {"files_id": chunks, "n": flt}
        assert sort_pushed_down(scratch_db, "fs.chunks", full, {"n": 1}), flt
        expected = [n for n in range(CHUNKS) if _within(n, flt)]
        assert [c["n"] for c in coll.find(full, {"_id": 0, "n": 1}).sort([("n", 1)])] == expected, flt
    # an equality prefix in the sort changes nothing
    assert sort_pushed_down(scratch_db, "fs.chunks", {"files_id": chunks, "n": {"$lt": 25}}, {"files_id": 1, "n": 1})
    got = [c["n"] for c in coll.find({"files_id": chunks, "n": {"$lt": 25}}).sort([("files_id", 1), ("n", 1)])]
    assert got == list(range(25))


def _within(n: int, flt: dict[str, float]) -> bool:
    ops = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
    return all(ops[op](n, bound) for op, bound in flt.items())


def test_gridout_reads_a_multi_thousand_chunk_file_whole(scratch_db: Database) -> None:
    """PyMongo's own reader, as aerOS's orchestrator calls it, over 3,000 chunks."""
    data = random.Random(5).randbytes(3 * 3000)
    file_id = GridFSBucket(scratch_db, chunk_size_bytes=3).upload_from_stream("f", data)
    chunks = scratch_db["fs.chunks"]
    assert sort_pushed_down(scratch_db, "fs.chunks", {"files_id": {"$eq": file_id}}, {"n": 1})
    assert GridFS(scratch_db).get(file_id).read() == data
    assert chunks.count_documents({"files_id": file_id}) == 3000


def test_dates_and_timestamps_under_the_key_sort_after_numbers(scratch_db: Database) -> None:
    """The index cannot tell 3, Int64(3), 3.0, a date 3 ms after the epoch and Timestamp(0, 3) apart
    (all the JSON text `3`); MongoDB sorts numbers before dates before timestamps."""
    coll = scratch_db["dense"]
    coll.create_index([("k", ASCENDING), ("n", ASCENDING)])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    values: list[Any] = [0, Timestamp(0, 1), epoch.replace(microsecond=2000), 3.0, Int64(4), Timestamp(0, 5), 6]
    coll.insert_many([{"k": 1, "n": v} for v in reversed(values)] + [{"k": 2, "n": 0}])
    assert sort_pushed_down(scratch_db, "dense", {"k": 1}, {"n": 1}) or not is_ferretdb(scratch_db.client)
    got = [d["n"] for d in coll.find({"k": 1}, {"_id": 0}).sort([("n", 1)])]
    expected = [0, 3.0, Int64(4), 6, datetime(1970, 1, 1, 0, 0, 0, 2000), Timestamp(0, 1), Timestamp(0, 5)]
    assert got == expected
    assert [type(v) for v in got] == [type(v) for v in expected]
    got = [d["n"] for d in coll.find({"k": 1, "n": {"$gte": 2}}, {"_id": 0}).sort([("n", 1)])]
    assert got == [3.0, 4, 6]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # not the integers 0..N-1: left to FerretDB's in-memory sort, which must still be right
        ([10, 2, -1, 0, 1], [-1, 0, 1, 2, 10]),
        ([2, 0, 1.5, 1], [0, 1, 1.5, 2]),
        ([1, "0", 0, None], [None, 0, 1, "0"]),
        ([1, 0, [3]], [0, 1, [3]]),
        ([2, 0, 1, 3], [0, 1, 2, 3]),  # (pushed down: the integers 0..3)
    ],
)
def test_any_other_key_values_sort_as_mongodb_sorts(
    scratch_db: Database, values: list[Any], expected: list[Any]
) -> None:
    coll = scratch_db["other"]
    coll.create_index([("k", ASCENDING), ("n", ASCENDING)])
    coll.insert_many([{"k": "a", "n": v} for v in values] + [{"k": "a"}] * (None in values))
    want = ([None] if None in values else []) + expected  # a missing key sorts with null
    got = [d.get("n") for d in coll.find({"k": "a"}, {"_id": 0}).sort([("n", 1)])]
    assert got == want
    if is_ferretdb(scratch_db.client):
        pushed = sort_pushed_down(scratch_db, "other", {"k": "a"}, {"n": 1})
        assert pushed is (sorted(map(str, values)) == sorted(map(str, range(len(values))))), (values, pushed)
    descending = coll.find({"k": "a"}, {"_id": 0}).sort([("n", -1)])
    assert next(d["n"] for d in descending if "n" in d) == expected[-1]


def test_an_array_holding_the_prefix_value_is_sorted_as_mongodb_sorts(scratch_db: Database) -> None:
    """`{k: 1}` also matches k: [1, 2], and then `sort({k: 1, n: 1})` orders by k's smallest element."""
    coll = scratch_db["arrays"]
    coll.create_index([("k", ASCENDING), ("n", ASCENDING)])
    coll.insert_many([{"k": 1, "n": 1}, {"k": [0, 1], "n": 2}, {"k": 1, "n": 0}])
    got = [d["n"] for d in coll.find({"k": 1}).sort([("k", 1), ("n", 1)])]
    assert got == [2, 0, 1]
    if is_ferretdb(scratch_db.client):
        assert not sort_pushed_down(scratch_db, "arrays", {"k": 1}, {"k": 1, "n": 1})
