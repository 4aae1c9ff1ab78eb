"""The store's rules come from what the server reports (buildInfo), not from which store we expect."""

from __future__ import annotations

import asyncio

import pytest

from flrepo.server.storage.dialect import Dialect
from flrepo.server.storage.errors import Invalid

MONGODB_BUILD_INFO = {"version": "7.0.14", "gitVersion": "ce59cfc6a3c5e5c067dca0d30697edd68d4f5188", "ok": 1.0}
FERRETDB_BUILD_INFO = {"version": "7.0.42", "ferretdbVersion": "v1.24.2", "ok": 1.0}
NESTED = {"meta": {"grid": [[1, 2], [3, 4]]}}


def test_mongodb_holds_nested_arrays_and_needs_no_lock():
    dialect = Dialect.from_build_info(MONGODB_BUILD_INFO)
    assert dialect.name == "mongodb" and dialect.atomic_updates
    dialect.check_document(NESTED)  # accepted


def test_ferretdb_refuses_nested_arrays_anywhere_in_a_document():
    dialect = Dialect.from_build_info(FERRETDB_BUILD_INFO)
    assert dialect.name == "ferretdb" and not dialect.atomic_updates
    for doc in (NESTED, {"a": [{"b": [[1]]}]}, {"$push": {"history": {"m": [[0]]}}}):
        with pytest.raises(Invalid, match="arrays"):
            dialect.check_document(doc)
    dialect.check_document({"a": [{"row": [1, 2]}], "b": [1, "x", None]})


async def test_ferretdb_serialises_changes_of_one_item_only():
    dialect = Dialect.from_build_info(FERRETDB_BUILD_INFO)
    order: list[str] = []

    async def change(ident: str, tag: str) -> None:
        async with dialect.item_lock(ident):
            order.append(f"{tag}+")
            await asyncio.sleep(0.01)
            order.append(f"{tag}-")

    await asyncio.gather(change("m1", "a"), change("m1", "b"), change("m2", "c"))
    # a and b (same item) never overlap; c (another item) runs beside them.
    first, second = ("a", "b") if order.index("a+") < order.index("b+") else ("b", "a")
    assert order.index(f"{first}-") < order.index(f"{second}+")
    assert order.index("c+") < order.index(f"{first}-")


async def test_the_service_reads_its_store_from_build_info(app, mongo_url):
    from pymongo import AsyncMongoClient

    async with AsyncMongoClient(mongo_url) as client:
        info = await client.admin.command("buildInfo")
    named = Dialect.from_build_info(info)
    measured = app.state.db.dialect
    # The product's rules from buildInfo; how chunks are read from what explain showed (test_chunk_reads).
    assert (measured.name, measured.nested_arrays, measured.atomic_updates, measured.indexed_distinct) == (
        named.name,
        named.nested_arrays,
        named.atomic_updates,
        named.indexed_distinct,
    )
