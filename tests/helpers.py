"""Factories and helpers shared by the tests (import these; never import conftest)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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
    "PLAN",
    "AerosData",
    "Catalogue",
    "FlSite",
    "LiveServer",
    "copy_databases",
    "create_app",
    "drop",
    "grid_counts",
    "last_condition",
    "logs_of",
    "make_model",
    "make_participant_key",
    "make_settings",
    "make_task",
    "make_task_references",
    "make_tls",
    "payload",
    "run_training",
    "seed_aeros",
    "sha",
    "upload",
    "wait_for",
]

CHUNK = 255 * 1024  # GridFS default chunk size
# The user_properties key of the docs test's counts (tests/docs/conftest.py), printed by tests/conftest.py.
DOCUMENTED = "documented commands"


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


# A task plan over what make_task_references creates.
PLAN: dict[str, Any] = {
    "task_id": "t1",
    "model": {"model_name": "digits", "model_version": "v1"},
    "strategy": {"strategy_name": "fedavg"},
    "strategy_conf": {"fraction_fit": 1.0},
    "transformations": [{"id": "scale", "parameters": {"with_mean": True}}],
    "rounds": 3,
    "min_participants": 2,
    "training": {"epochs": 2, "optimizer": "sgd"},
}


async def make_task_references(client: httpx.AsyncClient, *, model_file: bool = False) -> None:
    """The model, strategy and transformation PLAN names (the strategy and transformation with files,
    the model with one too if `model_file`); what exists already is kept as it is."""
    t = {"id": "scale", "parameter_types": {}, "default_values": {}, "outputs": ["np.ndarray"], "needs": {}}
    for path, body in [
        ("/model", {"model_name": "digits", "model_version": "v1", "meta": {"library": "numpy"}}),
        ("/strategy", {"strategy_name": "fedavg", "meta": {}}),
        ("/transformation", t),
    ]:
        r = await client.post(path, json=body)
        assert r.status_code in (201, 409), r.text
    files = [("/strategy/fedavg", b"pickled strategy"), ("/transformation/scale", b"pickled transformation")]
    for path, data in [("/model/digits/v1", b"model bytes")] * model_file + files:
        if (await client.head(path)).status_code != 200:
            assert (await upload(client, path, data)).status_code == 204


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
        # No background sweep: tests that sweep call it themselves, and a concurrent one would race them.
        "sweep_interval_s": 0,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def copy_databases(source: Settings, target: Settings) -> None:
    """Every document of `source`'s metadata and GridFS databases, as stored, into `target`'s."""
    with MongoClient(source.mongodb_url, serverSelectionTimeoutMS=2000) as client:
        for frm, to in ((source.db_name, target.db_name), (source.gridfs_db_name, target.gridfs_db_name)):
            for name in client[frm].list_collection_names():
                documents = [] if name.startswith("system.") else list(client[frm][name].find())
                if documents:
                    client[to][name].insert_many(documents)


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
        deadline = time.monotonic() + 120  # generous: a busy machine starts it late, never wrongly
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
    await make_task_references(client, model_file=True)
    body = {
        "task_id": task_id,
        "model": PLAN["model"],
        "strategy": PLAN["strategy"],
        "transformations": [{"id": "scale"}],
    }
    r = await client.post("/tasks", json={**body, **plan})
    assert r.status_code == 201, r.text
    return r.json()


# --- federated training -------------------------------------------------------------------------


@dataclass
class FlSite:
    """A running API server with the signed catalogue, and what FL processes need to use it."""

    repo: Any  # flrepo.client.RepositoryClient
    url: str
    env: dict[str, str]
    logs: Path


@dataclass
class Catalogue:
    """The signed catalogue, seeded once through the API into a database of its own (`template`), and the
    publisher that signed it: `keyring` signs, `trusted` is its FLREPO_TRUSTED_KEYS entry."""

    template: Settings
    keyring: Any  # flrepo.signing.Keyring
    trusted: str

    def copy_to(self, settings: Settings) -> Any:
        """Put the seeded catalogue in `settings`' (fresh) databases; a keyring of the publisher's own."""
        import dataclasses

        copy_databases(self.template, settings)
        return dataclasses.replace(self.keyring, trusted=dict(self.keyring.trusted))


def run_training(
    fl: FlSite,
    task_id: str,
    data: list[str],
    timeout: float = 600,  # an upper bound: a run on a busy machine may take minutes
    during: Callable[[dict[str, Any], list[subprocess.Popen[bytes]]], None] | None = None,
) -> tuple[dict[str, Any], int | None]:
    """Run the task's collector and one local execution per data spec to the end; (task, collector's exit code)."""
    from flrepo.fl.demo import start_training
    from flrepo.server.embedded import reap

    collector, workers = start_training(fl.url, task_id, data, fl.env, fl.logs)
    deadline = time.monotonic() + timeout
    try:
        while collector.poll() is None:
            if during:
                during(fl.repo.get_task(task_id).model_dump(mode="json"), [collector, *workers])
            assert time.monotonic() < deadline, "collector did not finish\n" + logs_of(fl.logs)
            time.sleep(0.2)
    finally:
        reap([collector, *workers], timeout=30)
    return fl.repo.get_task(task_id).model_dump(mode="json"), collector.returncode


def logs_of(directory: Path) -> str:
    """The tail of every log a test's processes wrote (for assertion messages)."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(directory.glob("*.log")))


def last_condition(task: dict[str, Any]) -> tuple[str, str]:
    condition = task["conditions"][-1]
    return condition["reason"], condition["message"] or ""


def make_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Path:
    """A throw-away CA and a server certificate for `hosts` (ca.crt, tls.crt, tls.key) in `directory`."""
    from flrepo.fl.examples.credentials import throwaway_tls

    return throwaway_tls(directory, hosts)


def make_participant_key(path: Path) -> str:
    """A SuperNode key pair: the private key at `path`; returns the public key line."""
    from flrepo.fl.examples.credentials import participant_key

    return participant_key(path)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; that value (AssertionError naming `what` after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(interval)


# --- a database as aerOS 1.1.0 wrote it ---------------------------------------------------------


class AerosData:
    """What `seed_aeros` wrote: the file payloads by item, and the GridFS ids as stored."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ids: dict[str, Any] = {}


def seed_aeros(raw_db: tuple[Any, Any]) -> AerosData:
    """Documents and files written exactly as aerOS 1.1.0 writes them.

    Documents are its pydantic v1 models' `.dict(by_alias=True)` (every field present, unset ones null,
    in the models' field order); files go through `gridfs.GridFS(db_grid).put(data, filename=...)` as
    its routes do (no size, sha256, content type or upload time beside the item), and the item holds
    `str(file_id)`. One model holds its id as an ObjectId, as a hand-edited database might.
    """
    import gridfs

    meta, grid = raw_db
    fs = gridfs.GridFS(grid)
    data = AerosData()

    def put(label: str, size: int, filename: str, **extra: Any) -> str:
        data.files[label] = payload(size)
        file_id = fs.put(data.files[label], filename=filename, **extra)
        data.ids[label] = file_id
        return str(file_id)

    # MLModel: model_name, model_version, model_id, meta (MLModelData: library, description)
    meta.models.insert_many(
        [
            {
                "model_name": "base",
                "model_version": "base2",
                "model_id": put("model base/base2", 2 * CHUNK + 11, "model/base/base2"),
                "meta": {"library": "keras", "description": "Test model - a CNN for CIFAR-10"},
            },
            {
                "model_name": "test",
                "model_version": "0",
                "model_id": put("model test/0", 1500, "model/test/0"),
                "meta": None,
            },
            {"model_name": "test", "model_version": "1", "model_id": None, "meta": None},
        ]
    )
    put("model oid/1", 700, "model/oid/1")
    meta.models.insert_one(
        {"model_name": "oid", "model_version": "1", "model_id": data.ids["model oid/1"], "meta": None}
    )
    # MLTrainingResults: model_name, model_version, training_id, results, weights_id, configuration_id
    weights = put("weights test/0/1", CHUNK + 5, "weights/test/0/1", training_id="1")
    meta.results.insert_many(
        [
            {
                "model_name": "test",
                "model_version": "0",
                "training_id": "1",
                "results": {"accuracy": "0.9"},
                "weights_id": weights,
                "configuration_id": None,
            },
            {
                "model_name": "test",
                "model_version": "0",
                "training_id": "2",
                "results": None,
                "weights_id": None,
                "configuration_id": None,
            },
        ]
    )
    # MLStrategy: meta (from MLStrategyData), strategy_name, strategy_description, strategy_id
    meta.strategies.insert_many(
        [
            {
                "meta": None,
                "strategy_name": "test-strategy",
                "strategy_description": "A test strategy",
                "strategy_id": put("strategy test-strategy", 900, "strategy/test-strategy"),
            },
            {"meta": {"rounds": "3"}, "strategy_name": "name_only", "strategy_description": None, "strategy_id": None},
        ]
    )
    # FLDataTransformation with MachineCapabilities() defaults
    meta.transformations.insert_one(
        {
            "id": "application.tests.categorical_transformation",
            "description": "The class transforming y data into categorical data",
            "parameter_types": {"categories": "int"},
            "default_values": {"categories": 10},
            "outputs": ["np.ndarray", "np.ndarray"],
            "needs": {
                "storage": None,
                "RAM": None,
                "GPU": False,
                "preinstalled_libraries": None,
                "available_models": None,
            },
            "storage_id": put(
                "transformation categorical", 640, "transformation/application.tests.categorical_transformation"
            ),
        }
    )
    # MLCollector: meta (from MLCollectorData), name, version, collector_id
    meta.collectors.insert_one({"meta": {"framework": "flwr"}, "name": "collector", "version": 1, "collector_id": None})
    return data


def held_out_accuracy(loader: str, model_zip: Path, workdir: Path) -> float:
    """The held-out digits accuracy of `model_zip` as `loader` (Python source: argv[1] the archive, argv[2]
    an .npz of x and y; prints the accuracy last) measures it in a fresh interpreter run in `workdir`."""
    import sys

    import numpy as np

    from flrepo.fl.examples.data import held_out

    _, _, x_test, y_test = held_out()
    np.savez(workdir / "test.npz", x=x_test / 16.0, y=y_test)
    run = subprocess.run(
        [sys.executable, "-c", loader, str(model_zip), str(workdir / "test.npz")],
        capture_output=True,
        text=True,
        check=True,
        cwd=workdir,
    )
    return float(run.stdout.strip().splitlines()[-1])
