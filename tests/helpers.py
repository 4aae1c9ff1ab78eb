"""Factories and helpers shared by the tests (import these; never import conftest)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from pymongo import MongoClient

from flrepo.server import serving
from flrepo.server.embedded import free_port
from flrepo.server.main import create_app
from flrepo.server.settings import Settings

__all__ = [
    "LiveServer",
    "create_app",
    "drop",
    "grid_counts",
    "make_model",
    "make_settings",
    "make_task",
    "payload",
    "sha",
    "upload",
]

CHUNK = 255 * 1024  # GridFS default chunk size


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int) -> bytes:
    return os.urandom(size)


async def make_model(
    client: httpx.AsyncClient, name: str = "m", version: str = "v1", library: str = "keras", **meta: Any
) -> dict[str, Any]:
    r = await client.post(
        "/model", json={"model_name": name, "model_version": version, "meta": {"library": library, **meta}}
    )
    assert r.status_code == 201, r.text
    return r.json()


async def upload(client: httpx.AsyncClient, path: str, data: bytes, filename: str = "file.bin") -> httpx.Response:
    return await client.put(path, files={"file": (filename, data, "application/octet-stream")})


def grid_counts(raw_db: tuple[Any, Any]) -> tuple[int, int]:
    """(files, chunks) in the test's GridFS bucket."""
    grid = raw_db[1]
    return grid["fs.files"].count_documents({}), grid["fs.chunks"].count_documents({})


def make_settings(mongo_url: str, **overrides: object) -> Settings:
    name = f"t{uuid.uuid4().hex[:12]}"
    values: dict[str, object] = {
        "mongodb_url": mongo_url,
        "db_name": name,
        "gridfs_db_name": f"{name}_grid",
        # Generous: on a busy machine the embedded store can take seconds for one write, and every
        # operation is bounded by this (tests of outages set their own, short one).
        "db_timeout_ms": 10_000,
        # No background sweep racing the tests' own sweeps (tests of the sweeper call it themselves).
        "sweep_interval_s": 0,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def drop(settings: Settings) -> None:
    with MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=2000) as client:
        client.drop_database(settings.db_name)
        client.drop_database(settings.gridfs_db_name)


class LiveServer:
    """uvicorn serving an app in a background thread, for clients that need a real socket."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The service's own configuration (flrepo.server.serving): the tests meet its connection limits.
        config = serving.config(app, app.state.settings, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
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


async def make_task(client: httpx.AsyncClient, task_id: str = "t1", **plan: Any) -> dict[str, Any]:
    """A Pending task over a model, a strategy and a transformation that all have files."""
    for path, body in [
        ("/model", {"model_name": "digits", "model_version": "v1", "meta": {"library": "numpy"}}),
        ("/strategy", {"strategy_name": "fedavg", "meta": {}}),
        (
            "/transformation",
            {"id": "scale", "parameter_types": {}, "default_values": {}, "outputs": [], "needs": {}},
        ),
    ]:
        r = await client.post(path, json=body)
        assert r.status_code in (201, 409), r.text
    for path, data in [
        ("/model/digits/v1", b"model bytes"),
        ("/strategy/fedavg", b"pickled strategy"),
        ("/transformation/scale", b"pickled transformation"),
    ]:
        if (await client.head(path)).status_code != 200:
            assert (await upload(client, path, data)).status_code == 204
    body = {
        "task_id": task_id,
        "model": {"model_name": "digits", "model_version": "v1"},
        "strategy": {"strategy_name": "fedavg"},
        "transformations": [{"id": "scale"}],
        **plan,
    }
    r = await client.post("/tasks", json=body)
    assert r.status_code == 201, r.text
    return r.json()
