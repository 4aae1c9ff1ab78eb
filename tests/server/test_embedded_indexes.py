"""The embedded store's queries use indexes, and its filter pushdown never changes results.

Runs against whatever `mongo_url` serves. On FerretDB (built with tools/ferretdb/pushdown.patch)
`explain` reports SQLite's EXPLAIN QUERY PLAN under queryPlanner.Plan plus a filterPushdown flag;
on MongoDB the winning plan's stages must include an index scan. Only the session fixture `mongo_url`
and this directory's conftest (a client of it, a scratch database per test, dropped after) come from
outside.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
from bson import Int64, ObjectId
from pymongo import ASCENDING, MongoClient
from pymongo.database import Database

# Winning-plan stages that read through an index (MongoDB 4.x-8.x).
INDEX_STAGES = {
    "IXSCAN",
    "DISTINCT_SCAN",
    "IDHACK",
    "EXPRESS_IXSCAN",
    "EXPRESS_IDHACK",
    "EXPRESS_CLUSTERED_IXSCAN",
    "COUNT_SCAN",
}


def is_ferretdb(client: MongoClient) -> bool:
    return "ferretdbVersion" in client.admin.command("buildInfo")


def _stages(plan: Any) -> Iterator[str]:
    if isinstance(plan, dict):
        if isinstance(plan.get("stage"), str):
            yield plan["stage"]
        for value in plan.values():
            yield from _stages(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from _stages(value)


def assert_uses_index(db: Database, command: dict[str, Any], ferret_find: dict[str, Any] | None = None) -> list[str]:
    """Explain `command`; assert it reads through an index and scans no collection.

    FerretDB's explain reads only a `filter` field and answers for the backend query every command
    shares (find, count, delete and update all select documents with it), so a command without one
    is explained there as the find `ferret_find`.
    """
    if is_ferretdb(db.client):
        explained = db.command("explain", ferret_find or command)
        plan = explained["queryPlanner"]["Plan"]
        assert explained["filterPushdown"] is True, explained
        details = [row.split("detail=", 1)[1] for row in plan]
        assert any(" USING INDEX " in d for d in details), plan
        assert not any(d.startswith("SCAN ") for d in details), plan
        return details
    explained = db.command("explain", command, verbosity="queryPlanner")
    stages = set(_stages(explained["queryPlanner"]["winningPlan"]))
    assert stages & INDEX_STAGES, explained["queryPlanner"]["winningPlan"]
    assert "COLLSCAN" not in stages, explained["queryPlanner"]["winningPlan"]
    return sorted(stages)


def _grid(db: Database, files: int = 3, chunks: int = 5) -> list[ObjectId]:
    """GridFS collections laid out as the service writes them: chunk _id "<files_id>:<n>"."""
    db["fs.chunks"].create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
    db["fs.files"].create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
    ids = [ObjectId() for _ in range(files)]
    for fid in ids:
        db["fs.files"].insert_one({"_id": fid, "length": Int64(chunks), "chunkSize": 1, "filename": str(fid)})
        db["fs.chunks"].insert_many(
            [{"_id": f"{fid}:{n}", "files_id": fid, "n": n, "data": b"x"} for n in range(chunks)]
        )
    return ids


def test_chunk_read_by_files_id_and_n_range_uses_an_index(scratch_db: Database) -> None:
    fid = _grid(scratch_db)[1]
    flt = {"files_id": fid, "n": {"$gte": 1, "$lte": 3}}
    find = {"find": "fs.chunks", "filter": flt, "sort": {"n": 1}, "projection": {"_id": 0, "n": 1, "data": 1}}
    assert_uses_index(scratch_db, find)
    got = scratch_db["fs.chunks"].find(flt, {"_id": 0, "n": 1}).sort([("n", 1)])
    assert [c["n"] for c in got] == [1, 2, 3]


def test_chunk_delete_by_files_id_uses_an_index(scratch_db: Database) -> None:
    fid = _grid(scratch_db)[0]
    delete = {"delete": "fs.chunks", "deletes": [{"q": {"files_id": fid}, "limit": 0}]}
    assert_uses_index(scratch_db, delete, ferret_find={"find": "fs.chunks", "filter": {"files_id": fid}})
    assert scratch_db["fs.chunks"].delete_many({"files_id": fid}).deleted_count == 5
    assert scratch_db["fs.chunks"].count_documents({}) == 10


def test_chunk_lookup_by_string_id_uses_an_index(scratch_db: Database) -> None:
    fid = _grid(scratch_db)[2]
    assert_uses_index(scratch_db, {"find": "fs.chunks", "filter": {"_id": f"{fid}:4"}})


def test_files_lookup_by_id_uses_an_index(scratch_db: Database) -> None:
    fid = _grid(scratch_db)[2]
    assert_uses_index(scratch_db, {"find": "fs.files", "filter": {"_id": fid}})
    # count_documents is an aggregation whose leading $match is pushed down.
    count = {"aggregate": "fs.files", "pipeline": [{"$match": {"_id": fid}}, {"$limit": 1}], "cursor": {}}
    assert_uses_index(scratch_db, count)
    assert scratch_db["fs.files"].count_documents({"_id": fid}, limit=1) == 1


def test_natural_key_lookup_uses_the_compound_unique_index(scratch_db: Database) -> None:
    models = scratch_db["models"]
    models.create_index([("model_name", ASCENDING), ("model_version", ASCENDING)], unique=True, name="natural_key")
    models.insert_many([{"model_name": f"m{i % 7}", "model_version": str(i), "meta": {}} for i in range(50)])
    key = {"model_name": "m3", "model_version": "10"}
    details = assert_uses_index(scratch_db, {"find": "models", "filter": key})
    if is_ferretdb(scratch_db.client):
        # Both fields reach the index, not only its first column.
        assert any("natural_key" in d and d.endswith("(<expr>=? AND <expr>=?)") for d in details), details
    assert models.find_one(key, {"_id": 0, "model_version": 1}) == {"model_version": "10"}
    assert models.find_one({"model_name": "m3", "model_version": "11"}) is None


# --- the pushdown never changes results --------------------------------------------------------

OID = ObjectId("64b7f0c2a1b2c3d4e5f60718")
OTHER_OID = ObjectId()

# Values stored in the documents: every type whose JSON form could be confused with another's.
STORED: list[Any] = [
    "5",
    "abc",
    "ABC",
    "",
    'say "hi"',
    "back\\slash",
    "caf\u00e9 \u4e2d\u6587 \U0001f600",
    "<&>",
    "line\u2028sep",
    "tab\tnew\nline",
    "[abc",
    "nul\x00byte",
    str(OID),
    5,
    -5,
    0,
    Int64(5),
    Int64(2**53),
    Int64(2**53 + 1),
    Int64(2**60),
    5.0,
    -0.0,
    5.5,
    float(2**53),
    float(2**60),
    True,
    False,
    None,
    OID,
    OTHER_OID,
    [5],
    ["abc", 1],
    [],  # (FerretDB v1 stores no nested arrays)
    [str(OID), OID],
    {"f": 5},
    {"a": "abc"},
]

# Query values of the types the patch pushes down (strings, ObjectIds, integers), and a few it
# does not, which must keep working as before.
QUERIED: list[Any] = [
    "5",
    "abc",
    "",
    'say "hi"',
    "back\\slash",
    "caf\u00e9 \u4e2d\u6587 \U0001f600",
    "<&>",
    "line\u2028sep",
    "tab\tnew\nline",
    "[abc",
    "nul\x00byte",
    "missing",
    str(OID),
    5,
    -5,
    0,
    Int64(5),
    Int64(0),
    2**53,
    Int64(2**53 + 1),
    Int64(2**60),
    2**31 - 1,
    OID,
    ObjectId(),
    5.0,
    True,
]


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _bson_equal(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return a == b  # exact across int, Int64 and float, as MongoDB compares numbers; -0.0 == 0
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_bson_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_bson_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


def _matches(doc: dict[str, Any], field: str, value: Any) -> bool:
    """MongoDB's `{field: value}` for a non-null, non-array, non-document value."""
    if field not in doc:
        return False
    stored = doc[field]
    if _bson_equal(stored, value):
        return True
    return isinstance(stored, list) and any(_bson_equal(item, value) for item in stored)


@pytest.fixture
def mixed(scratch_db: Database) -> list[dict[str, Any]]:
    coll = scratch_db["mixed"]
    coll.create_index([("f", ASCENDING)])  # f is indexed (pushed down and searched); g is not
    coll.create_index([("f", ASCENDING), ("h", ASCENDING)])
    docs: list[dict[str, Any]] = []
    for i, value in enumerate(STORED):
        docs.append({"_id": i, "f": value, "g": value, "h": STORED[(i * 7) % len(STORED)]})
    docs.append({"_id": len(docs)})  # every field missing
    docs.append({"_id": len(docs), "f": None, "g": "abc"})
    coll.insert_many(docs)
    return docs


@pytest.mark.parametrize("field", ["f", "g"])
def test_equality_results_match_true_matches(scratch_db: Database, mixed: list[dict[str, Any]], field: str) -> None:
    coll = scratch_db["mixed"]
    for value in QUERIED:
        expected = sorted(d["_id"] for d in mixed if _matches(d, field, value))
        for flt in ({field: value}, {field: {"$eq": value}}):
            got = sorted(d["_id"] for d in coll.find(flt, {"_id": 1}))
            assert got == expected, (flt, got, expected)
            assert coll.count_documents(flt) == len(expected), flt


def test_compound_equality_results_match_true_matches(scratch_db: Database, mixed: list[dict[str, Any]]) -> None:
    coll = scratch_db["mixed"]
    for a, b in itertools.product(QUERIED[::3], ["abc", 5, OID, "5", 0]):
        expected = sorted(d["_id"] for d in mixed if _matches(d, "f", a) and _matches(d, "h", b))
        got = sorted(d["_id"] for d in coll.find({"f": a, "h": b}, {"_id": 1}))
        assert got == expected, ({"f": a, "h": b}, got, expected)


def test_in_results_match_true_matches(scratch_db: Database, mixed: list[dict[str, Any]]) -> None:
    """`{f: {$in: [...]}}` (pushed down like equalities, for batched chunk reads) finds exactly what
    MongoDB's $in does: each value's equality matches, arrays holding one of them included."""
    coll = scratch_db["mixed"]
    lists = [QUERIED[i : i + 3] for i in range(0, len(QUERIED), 3)] + [["abc", 5, OID], ["missing"], [0, "0"]]
    for field in ("f", "g"):
        for values in lists:
            expected = sorted(d["_id"] for d in mixed if any(_matches(d, field, v) for v in values))
            got = sorted(d["_id"] for d in coll.find({field: {"$in": values}}, {"_id": 1}))
            assert got == expected, (field, values, got, expected)
    for a, b in itertools.product(QUERIED[::4], [["abc", 5], [OID, "5", 0]]):
        expected = sorted(d["_id"] for d in mixed if _matches(d, "f", a) and any(_matches(d, "h", v) for v in b))
        got = sorted(d["_id"] for d in coll.find({"f": a, "h": {"$in": b}}, {"_id": 1}))
        assert got == expected, ({"f": a, "h": {"$in": b}}, got, expected)


def test_batched_chunk_lookup_searches_both_index_columns(scratch_db: Database) -> None:
    """The read path's `{files_id, n: {$in: [...]}}` reaches both columns of the (files_id, n) index
    (the patch's OR of equality prefixes; with ANDed array branches SQLite searched files_id only)."""
    fid = _grid(scratch_db, chunks=20)[1]
    details = assert_uses_index(scratch_db, {"find": "fs.chunks", "filter": {"files_id": fid, "n": {"$in": [3, 4, 5]}}})
    if is_ferretdb(scratch_db.client):
        assert any("(<expr>=? AND <expr>=?)" in d and "files_id_1_n_1" in d for d in details), details
    got = scratch_db["fs.chunks"].find({"files_id": fid, "n": {"$in": [3, 4, 5, 99]}}, {"_id": 0, "n": 1})
    assert sorted(c["n"] for c in got) == [3, 4, 5]


def test_whole_collection_count_is_exact(scratch_db: Database) -> None:
    """`count` without a query (a list's X-Total-Count) is exact: the patch answers it from the table's
    leaf cells, one per row, whatever the documents' sizes (overflow pages) and after deletes."""
    coll = scratch_db["sizes"]
    assert scratch_db.command("count", "sizes")["n"] == 0  # no such collection yet
    docs = [{"_id": i, "pad": "x" * (i * 997 % 70_000)} for i in range(600)]
    coll.insert_many(docs)
    coll.delete_many({"_id": {"$in": list(range(0, 600, 7))}})
    expected = len([i for i in range(600) if i % 7])
    assert scratch_db.command("count", "sizes")["n"] == expected
    assert coll.estimated_document_count() == expected
    assert coll.count_documents({}) == expected


def test_id_equality_results_match_true_matches(scratch_db: Database) -> None:
    coll = scratch_db["ids"]
    ids: list[Any] = [
        "5",
        "abc",
        'q"uote',
        "caf\u00e9",
        OID,  # (not beside str(OID): FerretDB v1's unique _id index takes them for one value)
        5,
        Int64(6),
        7.0,
        -0.0,
        Int64(2**60),
        {"a": 1},
    ]
    coll.insert_many([{"_id": i} for i in ids])
    for value in [*QUERIED, 6, 7, Int64(7), 2**60]:
        expected = [i for i in ids if _bson_equal(i, value)]
        got = [d["_id"] for d in coll.find({"_id": value})]
        assert len(got) == len(expected) and all(any(_bson_equal(g, e) for e in expected) for g in got), (
            value,
            got,
            expected,
        )


async def test_the_services_own_chunk_queries_use_its_indexes(settings, mongo_client: MongoClient) -> None:
    """The read path's per-chunk look-up and the sweep's chunk-set query, on the indexes the service
    itself creates (ensure_indexes), explained as the service runs them on this store."""
    from flrepo.server.storage.db import Database as Store

    store = Store.connect(settings)
    try:
        await store.ensure_indexes()
        dialect = store.dialect
    finally:
        await store.close()
    grid = mongo_client[settings.gridfs_db_name]
    fid = ObjectId()
    grid["fs.chunks"].insert_many([{"_id": f"{fid}:{n}", "files_id": fid, "n": n, "data": b"x"} for n in range(6)])
    assert_uses_index(grid, {"find": "fs.chunks", "filter": {"files_id": fid, "n": 3}, "limit": 1})
    if not dialect.indexed_distinct:  # the sweep reads first chunks instead of a distinct over all of them
        assert_uses_index(grid, {"find": "fs.chunks", "filter": {"n": 0}, "projection": {"files_id": 1}})
    else:
        assert_uses_index(grid, {"distinct": "fs.chunks", "key": "files_id"})


def test_a_list_page_and_its_total_read_no_more_than_the_page(scratch_db: Database) -> None:
    """GET /model's queries (repository.items.page): the whole-collection page and its count. On MongoDB
    the page walks the _id index (no in-memory sort) and the count reads the collection's metadata; on
    FerretDB the page is unsorted (storage order) so the limit is pushed down, and the count comes from
    the collection's stats (tools/ferretdb/pushdown.patch)."""
    models = scratch_db["models"]
    models.insert_many([{"model_name": f"m{i}", "model_version": "v"} for i in range(30)])
    if is_ferretdb(scratch_db.client):
        explained = scratch_db.command("explain", {"find": "models", "filter": {}, "limit": 10})
        assert explained["limitPushdown"] is True, explained
        assert [d["model_name"] for d in models.find({}).limit(3)] == ["m0", "m1", "m2"]  # insertion order
    else:
        explained = scratch_db.command(
            "explain", {"find": "models", "filter": {}, "sort": {"_id": 1}, "limit": 10}, verbosity="queryPlanner"
        )
        stages = set(_stages(explained["queryPlanner"]["winningPlan"]))
        assert "IXSCAN" in stages and "SORT" not in stages, stages
        counted = scratch_db.command("explain", {"count": "models"}, verbosity="queryPlanner")
        assert "COLLSCAN" not in set(_stages(counted["queryPlanner"]["winningPlan"])), counted
    assert scratch_db.command("count", "models")["n"] == 30
