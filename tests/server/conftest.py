"""Fixtures of the tests that talk to the store through PyMongo directly (test_embedded_indexes.py,
test_embedded_sorts.py): a client of the session's store, and a database of its own per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient
from pymongo.database import Database


@pytest.fixture(scope="module")
def mongo_client(mongo_url: str) -> Iterator[MongoClient]:
    with MongoClient(mongo_url, serverSelectionTimeoutMS=5000) as client:
        yield client


@pytest.fixture
def scratch_db(mongo_client: MongoClient) -> Iterator[Database]:
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)
