"""Fixtures: a real MongoDB wire-protocol server, a fresh database per test, the app over HTTP.

The server is chosen in this order: FLREPO_TEST_MONGODB_URL; a `mongod` on PATH; else FerretDB
(SQLite backend) built from tools/ferretdb.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pymongo import MongoClient

from app.config import Settings
from app.devdb import EmbeddedMongo, free_port
from app.main import create_app


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("FLREPO_TEST_MONGODB_URL")
    if url:
        yield url
        return
    base = tmp_path_factory.mktemp("db")
    mongod = shutil.which("mongod")
    if mongod:
        port = free_port()
        proc = subprocess.Popen(
            [mongod, "--port", str(port), "--bind_ip", "127.0.0.1", "--dbpath", str(base)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        yield f"mongodb://127.0.0.1:{port}/"
        proc.terminate()
        proc.wait(10)
        return
    with EmbeddedMongo(base / "ferretdb", log_file=base / "ferretdb.log") as server:
        yield server.url


def make_settings(mongo_url: str, **overrides: object) -> Settings:
    name = f"t{uuid.uuid4().hex[:12]}"
    values: dict[str, object] = {
        "mongodb_url": mongo_url,
        "db_name": name,
        "gridfs_db_name": f"{name}_grid",
        "db_timeout_ms": 2000,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def drop(settings: Settings) -> None:
    with MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=2000) as client:
        client.drop_database(settings.db_name)
        client.drop_database(settings.gridfs_db_name)


@pytest.fixture
def settings(mongo_url: str) -> Iterator[Settings]:
    s = make_settings(mongo_url)
    yield s
    drop(s)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://flrepo.test") as c:
        yield c


class LiveServer:
    """uvicorn serving an app in a background thread, for clients that need a real socket."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("live server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings)) as server:
        yield server


@pytest.fixture
def raw_db(settings: Settings) -> Iterator[tuple[object, object]]:
    """Synchronous handles on the test's metadata and GridFS databases, for checking storage."""
    with MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=2000) as c:
        yield c[settings.db_name], c[settings.gridfs_db_name]
