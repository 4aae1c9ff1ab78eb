"""The Python SDK (flrepo.client), sync and async, against a real server on a socket.

Every public method of both clients is called at least once (the last test checks it), with typed
results and typed errors; streaming uploads and verified downloads (paths, file objects, a pipe, a
multi-chunk file); corruption in GridFS; resuming from a left part; which calls are retried; and
signed strategies and transformations.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import logging
import os
import tarfile
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import pytest
import yaml

from flrepo.client import (
    AsyncRepositoryClient,
    Conflict,
    Downloaded,
    Forbidden,
    IntegrityError,
    Invalid,
    Keyring,
    NotFound,
    Page,
    RateLimited,
    RepositoryClient,
    RepositoryError,
    Retry,
    SignatureError,
    Stored,
    TooLarge,
    Unauthorized,
    Unavailable,
    calls,
)
from flrepo.client.endpoint import AsyncEndpoint, AsyncPager, SyncEndpoint, SyncPager
from flrepo.client.transfer import CHUNK
from flrepo.schemas import ModelOut, StrategyOut, TrainingResultOut, TransformationOut
from flrepo.schemas.tasks import CheckpointOut, TaskIn, TaskOut
from flrepo.server.auth import hash_key
from flrepo.server.embedded import free_port
from flrepo.server.main import create_app
from flrepo.signing import public_key_of
from tests.helpers import LiveServer, drop, make_settings

FLAVOURS = ["sync", "async"]
CLASSES: dict[str, type[Any]] = {"sync": RepositoryClient, "async": AsyncRepositoryClient}
FAST = Retry(attempts=3, base_s=0.001, cap_s=0.005)
PUBLISHER_KEY = bytes(range(32))
PUBLISHER = Keyring.signer("k1", PUBLISHER_KEY)
IMPOSTOR = Keyring.signer("k1", bytes(range(1, 33)))  # same key id, another private key
STRANGER = Keyring.signer("k2", PUBLISHER_KEY)  # the same key under another id: does not trust k1
NO_KEYS = Keyring()
BIG = 3 * CHUNK + 1  # four upload chunks
CLOSERS = {"close", "aclose"}
# Public methods called through `Recorded`, per flavour; test_every_public_method_was_called reads it.
USED: dict[str, set[str]] = {flavour: set() for flavour in FLAVOURS}


# --- helpers ------------------------------------------------------------------------------------


def public_methods(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n)) and n not in CLOSERS}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Recorded:
    """A client whose public methods are noted in USED when used (attributes pass through)."""

    def __init__(self, client: Any, flavour: str) -> None:
        self.client = client
        self.flavour = flavour

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.client, name)
        if callable(value) and not name.startswith("_"):
            USED[self.flavour].add(name)
        return value


async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a method of either client: the async one's coroutine is awaited."""
    result = fn(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


@pytest.fixture(autouse=True)
def _no_client_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FLREPO_URL",
        "FLREPO_API_KEY",
        "FLREPO_SIGNING_KEY",
        "FLREPO_SIGNING_KEY_FILE",
        "FLREPO_SIGNING_KEY_ID",
        "FLREPO_TRUSTED_KEYS",
        "FLREPO_TRUSTED_KEYS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """connect(flavour, url, **options): a Recorded client (fast retries, the publisher's keys), closed
    at the end of the test."""
    opened: list[Any] = []

    def make(flavour: str, url: str, **options: Any) -> Any:
        options.setdefault("retry", FAST)
        options.setdefault("keyring", PUBLISHER)
        client = CLASSES[flavour](url, **options)
        opened.append(client)
        return Recorded(client, flavour)

    yield make
    for client in opened:
        if isinstance(client, AsyncRepositoryClient):
            await client.aclose()
        else:
            client.close()


class _CountedSync(httpx.SyncByteStream):
    def __init__(self, inner: Any, owner: Flaky, cut: int | None) -> None:
        self.inner, self.owner, self.cut = inner, owner, cut

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            piece, cut = self.owner.count(chunk, self.cut)
            yield piece
            if cut:
                raise httpx.RemoteProtocolError("injected: peer closed connection")

    def close(self) -> None:
        self.inner.close()


class _CountedAsync(httpx.AsyncByteStream):
    def __init__(self, inner: Any, owner: Flaky, cut: int | None) -> None:
        self.inner, self.owner, self.cut = inner, owner, cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            piece, cut = self.owner.count(chunk, self.cut)
            yield piece
            if cut:
                raise httpx.RemoteProtocolError("injected: peer closed connection")

    async def aclose(self) -> None:
        await self.inner.aclose()


class Flaky(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A real transport (sync or async) to the server, whose first requests fail per `plan`: an
    exception class is raised before anything is sent, 503 answers without reaching the server, so
    does (status, headers),
    ("cut", n) lets n body bytes through then drops the connection, None passes. Records every
    request and counts the body bytes of successful (2xx) responses."""

    def __init__(self, plan: list[Any] | None = None) -> None:
        self.plan = list(plan or [])
        self.requests: list[httpx.Request] = []
        self.received = 0
        self._sent_in_response = 0
        self._sync: httpx.HTTPTransport | None = None
        self._async: httpx.AsyncHTTPTransport | None = None

    def _failure(self, request: httpx.Request) -> tuple[httpx.Response | None, int | None]:
        self.requests.append(request)
        failure = self.plan.pop(0) if self.plan else None
        if isinstance(failure, type) and issubclass(failure, Exception):
            raise failure("injected by the test", request=request)
        if failure == 503:
            return httpx.Response(503, json={"detail": "injected: database unavailable"}, request=request), None
        if isinstance(failure, tuple) and isinstance(failure[0], int):  # (status, headers)
            status, headers = failure
            return httpx.Response(status, json={"detail": "injected: not now"}, headers=headers, request=request), None
        self._sent_in_response = 0
        return None, failure[1] if isinstance(failure, tuple) else None

    def count(self, chunk: bytes, cut: int | None) -> tuple[bytes, bool]:
        """The part of `chunk` to pass on, and whether the connection drops after it."""
        stop = cut is not None and self._sent_in_response + len(chunk) >= cut
        piece = chunk[: cut - self._sent_in_response] if stop and cut is not None else chunk
        self._sent_in_response += len(piece)
        self.received += len(piece)
        return piece, stop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer, cut = self._failure(request)
        if answer is not None:
            return answer
        self._sync = self._sync or httpx.HTTPTransport()
        response = self._sync.handle_request(request)
        if response.status_code < 300:
            response.stream = _CountedSync(response.stream, self, cut)
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer, cut = self._failure(request)
        if answer is not None:
            return answer
        self._async = self._async or httpx.AsyncHTTPTransport()
        response = await self._async.handle_async_request(request)
        if response.status_code < 300:
            response.stream = _CountedAsync(response.stream, self, cut)
        return response

    def close(self) -> None:
        if self._sync:
            self._sync.close()

    async def aclose(self) -> None:
        if self._async:
            await self._async.aclose()


class EditedPutAnswers(Flaky):
    """Passes everything to the server, and sets (a value) or removes (None) the ETag of its answers
    to PUTs: a server that does or does not say what it stored."""

    def __init__(self, etag: str | None) -> None:
        super().__init__()
        self.etag = etag

    def _edit(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.method == "PUT":
            response.headers.pop("etag", None)
            if self.etag is not None:
                response.headers["etag"] = self.etag
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._edit(request, super().handle_request(request))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self._edit(request, await super().handle_async_request(request))


def puts(transport: Flaky) -> int:
    return sum(q.method == "PUT" for q in transport.requests)


async def collect(items: Any) -> list[Any]:
    """The items of a sync or an async iterator."""
    if hasattr(items, "__aiter__"):
        return [item async for item in items]
    return list(items)


def pipe_with(data: bytes) -> io.BufferedReader:
    """A non-seekable source (size unknown) holding `data` (small enough for the pipe's buffer)."""
    assert len(data) < 64 * 1024
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb") as writer:
        writer.write(data)
    return os.fdopen(read_fd, "rb")


def corrupt_stored_file(raw_db: tuple[Any, Any], filename: str) -> None:
    """Flip one byte of the first GridFS chunk of the file uploaded as `filename` (same length)."""
    from bson import ObjectId

    from flrepo.server.storage.db import FILE_FIELDS

    meta, grid = raw_db
    items = [(doc, field) for coll, field in FILE_FIELDS.items() for doc in meta[coll].find({"filename": filename})]
    assert len(items) == 1, filename
    doc, field = items[0]
    chunk = grid["fs.chunks"].find_one({"files_id": ObjectId(doc[field]), "n": 0})
    data = bytearray(chunk["data"])
    data[10] ^= 0x01
    grid["fs.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(data)}})


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def double(x: int) -> int:
    return 2 * x


# --- the two clients --------------------------------------------------------------------------


def test_both_clients_expose_every_call_shape_with_the_same_signature():
    assert public_methods(RepositoryClient) == public_methods(AsyncRepositoryClient)
    shapes = {
        name
        for name, fn in vars(calls).items()
        if inspect.isfunction(fn)
        and not name.startswith("_")
        and str(fn.__annotations__.get("return", "")).startswith("Call[")
    }
    assert len(shapes) == 34
    # Every list call that pages (limit + offset) has an iterator over all its pages.
    paged = {name for name in shapes if {"limit", "offset"} <= set(inspect.signature(getattr(calls, name)).parameters)}
    assert len(paged) == 10
    pagers: dict[str, Any] = {}
    for cls, endpoint, pager in (
        (RepositoryClient, SyncEndpoint, SyncPager),
        (AsyncRepositoryClient, AsyncEndpoint, AsyncPager),
    ):
        endpoints = {name for name, value in vars(cls).items() if isinstance(value, endpoint)}
        assert endpoints == shapes, (cls.__name__, endpoints ^ shapes)
        for name in shapes:
            assert vars(cls)[name].shape is getattr(calls, name)
        pagers[cls.__name__] = {name: value.shape for name, value in vars(cls).items() if isinstance(value, pager)}
        assert {shape.__name__ for shape in pagers[cls.__name__].values()} == paged
        assert all(name.startswith("iter_") for name in pagers[cls.__name__])
    assert pagers["RepositoryClient"] == pagers["AsyncRepositoryClient"]
    for name in public_methods(RepositoryClient):
        sync_method, async_method = getattr(RepositoryClient, name), getattr(AsyncRepositoryClient, name)
        assert inspect.signature(sync_method) == inspect.signature(async_method), name
        assert not inspect.iscoroutinefunction(sync_method), name
        if name.startswith("iter_"):
            assert inspect.isgeneratorfunction(sync_method) and inspect.isasyncgenfunction(async_method), name
            assert "page_size" in inspect.signature(sync_method).parameters, name
            assert not {"limit", "offset"} & set(inspect.signature(sync_method).parameters), name
        else:
            assert inspect.iscoroutinefunction(async_method), name


def test_idempotency_flags_of_the_call_shapes():
    assert calls.get_model("m", "v").idempotent and calls.list_tasks().idempotent
    assert calls.update_model_meta("m", "v", {}).idempotent and calls.update_strategy_meta("s", {}).idempotent
    for call in (
        calls.create_model("m", "v", "numpy"),
        calls.delete_model("m", "v"),
        calls.create_task({}),
        calls.update_task_status("t", phase="Running"),  # appends to the history: never sent twice
        calls.cancel_task("t"),
        calls.delete_task("t"),
    ):
        assert not call.idempotent, call


# --- every JSON call ----------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_every_json_call(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    assert await run(c.health) == {"status": "ok"}
    assert (await run(c.ready))["status"] == "ready"
    assert await run(c.send, calls.health()) == {"status": "ok"}

    # --- models
    created = await run(c.create_model, "m", "v1", "numpy", features=64, tags=["a"])
    assert isinstance(created, ModelOut)
    assert (created.model_name, created.model_version) == ("m", "v1")
    assert created.meta["library"] == "numpy" and created.meta["features"] == 64 and created.meta["tags"] == ["a"]
    assert created.size is None and created.sha256 is None
    await run(c.create_model, "m", "v2", "keras")
    await run(c.create_model, "n", "v1", "sklearn")
    with pytest.raises(Conflict) as dup:
        await run(c.create_model, "m", "v1", "numpy")
    assert dup.value.status == 409 and "already exists" in dup.value.detail and "already exists" in str(dup.value)

    await run(c.update_model_meta, "m", "v2", {"library": "torch", "layers": 3})
    got = await run(c.get_model, "m", "v2")
    assert isinstance(got, ModelOut) and got.meta["library"] == "torch" and got.meta["layers"] == 3
    assert "features" not in got.meta
    with pytest.raises(Invalid) as no_library:
        await run(c.update_model_meta, "m", "v2", {"layers": 4})
    assert no_library.value.status == 422 and "library" in str(no_library.value.detail)
    assert (await run(c.get_model, "m", "v2")).meta["layers"] == 3  # unchanged

    everything = await run(c.list_models)
    assert isinstance(everything, Page) and everything.total == 3
    assert all(isinstance(m, ModelOut) for m in everything)
    assert {(m.model_name, m.model_version) for m in everything} == {("m", "v1"), ("m", "v2"), ("n", "v1")}
    first = await run(c.list_models, limit=2)
    rest = await run(c.list_models, limit=2, offset=2)
    assert (len(first), first.total, len(rest), rest.total) == (2, 3, 1, 3)
    assert [m.model_dump() for m in [*first, *rest]] == [m.model_dump() for m in everything]
    assert list(await run(c.list_models, offset=3)) == []

    await run(c.upload_model, "n", "v1", io.BytesIO(b"n weights"), filename="n.bin")
    available = await run(c.available_models)
    assert [(m.model_name, m.model_version) for m in available] == [("n", "v1")] and available.total == 1
    assert available[0].size == 9 and available[0].sha256 == sha(b"n weights") and available[0].filename == "n.bin"
    assert list(await run(c.available_models, limit=5, offset=1)) == []

    # --- training results
    results = {"accuracy": 0.91, "converged": True, "optimizer": "sgd", "epochs": 3}
    result = await run(c.create_training_result, "m", "v1", "r1", results, configuration_id="c1")
    assert isinstance(result, TrainingResultOut) and result.results == results and result.configuration_id == "c1"
    assert isinstance(result.results["converged"], bool) and isinstance(result.results["epochs"], int)
    await run(c.create_training_result, "n", "v1", "r2", {"loss": 0.2})
    with pytest.raises(Conflict):
        await run(c.create_training_result, "m", "v1", "r1", {"accuracy": 0.5})
    with pytest.raises(Conflict, match="configuration_id"):
        await run(c.upload_weights, "m", "v1", "r1", "1", io.BytesIO(b"w"))
    await run(c.upload_weights, "m", "v1", "r1", "c1", io.BytesIO(b"final weights"))
    one = await run(c.get_training_result, "m", "v1", "r1")
    assert isinstance(one, TrainingResultOut) and one.size == 13 and one.sha256 == sha(b"final weights")
    sink = io.BytesIO()
    fetched = await run(c.download_weights, "m", "v1", "r1", sink)
    assert sink.getvalue() == b"final weights" and fetched.sha256 == one.sha256
    all_results = await run(c.list_training_results)
    assert all_results.total == 2 and {r.training_id for r in all_results} == {"r1", "r2"}
    assert all(isinstance(r, TrainingResultOut) for r in all_results)
    assert len(await run(c.list_training_results, limit=1)) == 1
    mine = await run(c.list_model_training_results, "m", "v1")
    assert [r.training_id for r in mine] == ["r1"] and mine.total == 1
    assert list(await run(c.list_model_training_results, "m", "v2")) == []
    trained = await run(c.list_models, trained=True)
    assert {(m.model_name, m.model_version) for m in trained} == {("m", "v1"), ("n", "v1")} and trained.total == 2
    untrained = await run(c.list_models, trained=False)
    assert [(m.model_name, m.model_version) for m in untrained] == [("m", "v2")] and untrained.total == 1

    # --- strategies
    strategy = await run(c.create_strategy, "fedavg", "averages weights", {"class": "FedAvg"})
    assert isinstance(strategy, StrategyOut) and strategy.strategy_description == "averages weights"
    assert strategy.meta == {"class": "FedAvg"} and strategy.size is None
    await run(c.create_strategy, "bare")
    assert (await run(c.get_strategy, "bare")).meta == {}
    with pytest.raises(Conflict):
        await run(c.create_strategy, "fedavg")
    await run(c.update_strategy_meta, "fedavg", {"class": "FedAvg", "fraction_fit": 0.5})
    kept = await run(c.get_strategy, "fedavg")
    assert kept.meta["fraction_fit"] == 0.5 and kept.strategy_description == "averages weights"
    await run(c.update_strategy_meta, "fedavg", {"class": "FedAvg"}, description="renamed")
    renamed = await run(c.get_strategy, "fedavg")
    assert isinstance(renamed, StrategyOut) and renamed.strategy_description == "renamed"
    assert renamed.meta == {"class": "FedAvg"}
    strategies = await run(c.list_strategies)
    assert {s.strategy_name for s in strategies} == {"fedavg", "bare"} and strategies.total == 2
    assert (await run(c.list_strategies, limit=1, offset=1)).total == 2

    # --- transformations
    transformation = await run(
        c.create_transformation,
        "t.scale",
        parameter_types={"factor": "float"},
        default_values={"factor": 1.0},
        outputs=["np.ndarray"],
        needs={"RAM": 2},
        description="scales",
    )
    assert isinstance(transformation, TransformationOut) and transformation.id == "t.scale"
    assert transformation.parameter_types == {"factor": "float"} and transformation.needs["RAM"] == 2
    await run(c.create_transformation, "t.other")
    with pytest.raises(Conflict):
        await run(c.create_transformation, "t.scale")
    await run(
        c.update_transformation_meta,
        "t.scale",
        parameter_types={"factor": "float", "shift": "int"},
        default_values={"factor": 2.0, "shift": 0},
        outputs=["np.ndarray"],
        description="scales and shifts",
    )
    updated = await run(c.get_transformation, "t.scale")
    assert isinstance(updated, TransformationOut)
    assert updated.default_values == {"factor": 2.0, "shift": 0} and updated.description == "scales and shifts"
    transformations = await run(c.list_transformations)
    assert {t.id for t in transformations} == {"t.scale", "t.other"} and transformations.total == 2
    assert len(await run(c.list_transformations, limit=1)) == 1

    # --- tasks: every reference must exist with its file
    spec = TaskIn.model_validate(
        {
            "task_id": "job",
            "model": {"model_name": "m", "model_version": "v1"},
            "strategy": {"strategy_name": "fedavg"},
            "transformations": [{"id": "t.scale", "parameters": {"factor": 3.0}}],
            "rounds": 2,
        }
    )
    with pytest.raises(Invalid, match="unknown references") as missing_files:
        await run(c.create_task, spec)
    assert "the file of" in missing_files.value.detail
    await run(c.upload_strategy, "fedavg", io.BytesIO(cloudpickle.dumps({"strategy": "FedAvg"})))
    await run(c.upload_transformation, "t.scale", io.BytesIO(cloudpickle.dumps({"transformation": "scale"})))
    task = await run(c.create_task, spec)
    assert isinstance(task, TaskOut) and task.task_id == "job" and task.phase == "Pending" and task.rounds == 2
    assert task.transformations[0].parameters == {"factor": 3.0}
    other = await run(
        c.create_task, {"model": {"model_name": "n", "model_version": "v1"}, "strategy": {"strategy_name": "fedavg"}}
    )
    assert isinstance(other, TaskOut) and len(other.task_id) == 32  # generated
    with pytest.raises(Conflict):
        await run(c.create_task, spec)

    tasks = await run(c.list_tasks)
    assert tasks.total == 2 and {t.task_id for t in tasks} == {"job", other.task_id}
    assert all(isinstance(t, TaskOut) for t in tasks)
    assert len(await run(c.list_tasks, limit=1)) == 1

    running = await run(
        c.update_task_status,
        "job",
        phase="Running",
        current_round=1,
        participants=[{"node_id": "edge-1", "samples": 100}],
        round={"round": 1, "loss": 0.5, "participants": 1},
    )
    assert isinstance(running, TaskOut) and running.phase == "Running" and running.current_round == 1
    assert running.start_time is not None and [p.node_id for p in running.participants] == ["edge-1"]
    assert [(r.round, r.loss) for r in running.history] == [(1, 0.5)]
    assert [t.task_id for t in await run(c.list_tasks, phase="Running")] == ["job"]
    assert [t.task_id for t in await run(c.list_tasks, phase="Pending")] == [other.task_id]
    checkpoint = await run(c.create_checkpoint, "job", 1, loss=0.5, metrics={"accuracy": 0.8})
    assert isinstance(checkpoint, CheckpointOut) and checkpoint.round == 1 and checkpoint.size is None
    weights = os.urandom(3000)
    await run(c.upload_checkpoint, "job", 1, io.BytesIO(weights), filename="round-1.npz")
    copy = io.BytesIO()
    assert (await run(c.download_checkpoint, "job", 1, copy)).size == 3000 and copy.getvalue() == weights
    listed = await run(c.list_checkpoints, "job")
    assert [cp.round for cp in listed] == [1] and listed[0].sha256 == hashlib.sha256(weights).hexdigest()
    assert (await run(c.get_task, "job")).best.round == 1
    with pytest.raises(Conflict):
        await run(c.delete_task, "job")  # running
    with pytest.raises(Invalid):
        await run(c.update_task_status, "job", phase="Paused")
    done = await run(
        c.update_task_status,
        "job",
        phase="Succeeded",
        round={"round": 2, "loss": 0.25},
        result={"model_name": "m", "model_version": "v1", "training_id": "r1"},
    )
    assert done.phase == "Succeeded" and done.completion_time is not None and len(done.history) == 2
    assert done.result is not None and done.result.training_id == "r1"
    history = await run(c.get_task_history, "job", limit=1, offset=1)
    assert history.total == 2 and [(r.round, r.loss) for r in history] == [(2, 0.25)]
    assert [r.round for r in (await run(c.get_task, "job", history=1)).history] == [2]
    assert all(t.history == [] for t in await run(c.list_tasks, history=0))
    with pytest.raises(Conflict):
        await run(c.update_task_status, "job", phase="Running")  # a finished task stays finished
    fetched_task = await run(c.get_task, "job")
    assert isinstance(fetched_task, TaskOut) and fetched_task.phase == "Succeeded"
    assert [t.task_id for t in await run(c.list_tasks, phase="Succeeded")] == ["job"]
    assert list(await run(c.list_tasks, phase="Running")) == []

    cancelled = await run(c.cancel_task, other.task_id, "wrong data")
    assert isinstance(cancelled, TaskOut) and cancelled.phase == "Failed"
    last = cancelled.conditions[-1]
    assert (last.reason, last.message) == ("Cancelled", "cancelled by anonymous: wrong data")
    with pytest.raises(Conflict, match="nothing to cancel"):
        await run(c.cancel_task, other.task_id)

    # --- audit (no keys configured: anonymous requests are admin)
    audit = await run(c.list_audit)
    assert isinstance(audit, list) and len(audit) > 10
    oldest = audit[-1]
    assert (oldest["method"], oldest["path"], oldest["status"]) == ("POST", "/model", 201)
    assert all(entry["method"] != "GET" for entry in audit)
    assert len(await run(c.list_audit, limit=3)) == 3
    assert await run(c.list_audit, since="2999-01-01T00:00:00Z") == []

    # --- deletes
    await run(c.delete_task, "job")
    await run(c.delete_task, other.task_id)
    await run(c.delete_training_result, "m", "v1", "r1")
    await run(c.delete_strategy, "fedavg")
    await run(c.delete_transformation, "t.scale")
    await run(c.delete_model, "m", "v1")
    for fn, args in [
        (c.get_task, ("job",)),
        (c.get_training_result, ("m", "v1", "r1")),
        (c.get_strategy, ("fedavg",)),
        (c.get_transformation, ("t.scale",)),
        (c.get_model, ("m", "v1")),
        (c.delete_model, ("m", "v1")),
    ]:
        with pytest.raises(NotFound):
            await run(fn, *args)
    assert (await run(c.list_models)).total == 2
    assert [r.training_id for r in await run(c.list_training_results)] == ["r2"]


# --- typed errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_not_found_conflict_invalid_carry_the_server_detail(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    with pytest.raises(NotFound) as missing:
        await run(c.get_model, "nope", "v1")
    assert missing.value.status == 404 and "not found" in missing.value.detail
    assert str(missing.value).startswith("GET /model/meta: 404 ")
    with pytest.raises(NotFound):
        await run(c.download_model, "nope", "v1", io.BytesIO())
    with pytest.raises(NotFound):
        await run(c.load_strategy, "nope")

    await run(c.create_strategy, "s")
    with pytest.raises(Conflict) as conflict:
        await run(c.create_strategy, "s")
    assert conflict.value.status == 409 and "s" in conflict.value.detail
    with pytest.raises(NotFound):
        await run(c.download_strategy, "s", io.BytesIO())  # no file yet

    with pytest.raises(Invalid) as invalid:
        await run(c.create_model, "$x", "v1", "numpy")
    assert invalid.value.status == 422 and isinstance(invalid.value.detail, list)
    assert "model_name" in str(invalid.value)  # FastAPI's list, read as "field: message"
    with pytest.raises(Invalid):
        await run(c.get_strategy, "$x")
    for cls in (NotFound, Conflict, Invalid):
        assert issubclass(cls, RepositoryError)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    entries = [
        {"id": "reader", "role": "reader", "sha256": hash_key("reader-secret")},
        {"id": "writer", "role": "writer", "sha256": hash_key("writer-secret")},
        {"id": "admin", "role": "admin", "sha256": hash_key("admin-secret")},
    ]
    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_keys_roles_and_size_limits(mongo_url, keys_file, connect, flavour):
    settings = make_settings(mongo_url, api_keys_file=keys_file, max_upload_bytes=1000, max_body_bytes=2048)
    try:
        with LiveServer(create_app(settings)) as server:
            anonymous = connect(flavour, server.url)
            wrong = connect(flavour, server.url, api_key="guess")
            reader = connect(flavour, server.url, api_key="reader-secret")
            writer = connect(flavour, server.url, api_key="writer-secret")
            admin = connect(flavour, server.url, api_key="admin-secret")

            assert (await run(anonymous.health))["status"] == "ok"  # liveness needs no key
            for client in (anonymous, wrong):
                with pytest.raises(Unauthorized) as unauthorized:
                    await run(client.list_models)
                assert unauthorized.value.status == 401 and "API key" in unauthorized.value.detail
            assert list(await run(reader.list_models)) == []
            with pytest.raises(Forbidden) as forbidden:
                await run(reader.create_model, "m", "v1", "numpy")
            assert forbidden.value.status == 403 and "writer" in forbidden.value.detail

            await run(writer.create_model, "m", "v1", "numpy")
            with pytest.raises(Forbidden, match="admin"):
                await run(writer.delete_model, "m", "v1")
            with pytest.raises(Forbidden):
                await run(writer.list_audit)
            # The server writes an audit line after sending the response: ask until it is there.
            for _ in range(200):
                entries = await run(admin.list_audit, key_id="writer")
                if entries:
                    break
                await asyncio.sleep(0.01)
            assert [(e["method"], e["path"], e["key_id"]) for e in entries] == [("POST", "/model", "writer")]
            assert await run(admin.list_audit, key_id="reader") == []

            # The file limit: 413, nothing stored; the JSON body limit too.
            with pytest.raises(TooLarge) as too_large:
                await run(writer.upload_model, "m", "v1", io.BytesIO(b"x" * 5000))
            assert too_large.value.status == 413 and "1000-byte limit" in too_large.value.detail
            await run(writer.upload_model, "m", "v1", io.BytesIO(b"x" * 1000))  # exactly at the limit
            assert (await run(reader.get_model, "m", "v1")).size == 1000
            with pytest.raises(TooLarge, match="2048"):
                await run(writer.create_model, "big", "v1", "numpy", notes="y" * 5000)
            with pytest.raises(NotFound):
                await run(reader.get_model, "big", "v1")
            await run(admin.delete_model, "m", "v1")
    finally:
        drop(settings)


class Counting(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Counts the attempts made to an address where nothing listens."""

    def __init__(self) -> None:
        self.attempts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        with httpx.HTTPTransport() as real:
            return real.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        async with httpx.AsyncHTTPTransport() as real:
            return await real.handle_async_request(request)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_unavailable_when_nothing_listens_or_the_database_is_down(mongo_url, connect, flavour):
    closed = f"http://127.0.0.1:{free_port()}"
    transport = Counting()
    c = connect(flavour, closed, retry=Retry(attempts=2, base_s=0.01), transport=transport)
    with pytest.raises(Unavailable, match="cannot reach") as unreachable:
        await run(c.create_model, "m", "v1", "numpy")  # refused: safe to try again even for a POST
    assert unreachable.value.status is None and isinstance(unreachable.value.__cause__, httpx.ConnectError)
    assert transport.attempts == 2

    settings = make_settings(f"mongodb://127.0.0.1:{free_port()}/", db_timeout_ms=300)
    with LiveServer(create_app(settings)) as server:
        c = connect(flavour, server.url, retry=Retry(attempts=2, base_s=0.01))
        assert (await run(c.health))["status"] == "ok"
        with pytest.raises(Unavailable) as down:
            await run(c.ready)
        assert down.value.status == 503 and "unavailable" in str(down.value.detail)


# --- streaming transfers ------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_streaming_uploads_and_downloads(live_server, connect, tmp_path, flavour):
    c = connect(flavour, live_server.url)
    for version in ("path", "bytesio", "open", "pipe"):
        await run(c.create_model, "m", version, "numpy")
    data = os.urandom(BIG)
    source = tmp_path / "weights.bin"
    source.write_bytes(data)

    # From a path: 1 MiB pieces, progress ends at (size, size).
    seen: list[tuple[int, int | None]] = []
    await run(c.upload_model, "m", "path", source, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(CHUNK, BIG), (2 * CHUNK, BIG), (3 * CHUNK, BIG), (BIG, BIG)]
    stored = await run(c.get_model, "m", "path")
    assert (stored.size, stored.sha256, stored.filename) == (BIG, sha(data), "weights.bin")

    # From a BytesIO positioned after a header: only what follows is sent.
    buffer = io.BytesIO(b"HEADER" + data)
    buffer.seek(6)
    seen.clear()
    await run(c.upload_model, "m", "bytesio", buffer, filename="from-memory.bin", progress=lambda *p: seen.append(p))
    assert seen[-1] == (BIG, BIG)
    stored = await run(c.get_model, "m", "bytesio")
    assert (stored.sha256, stored.filename) == (sha(data), "from-memory.bin")

    # From an open file: its name is the default filename.
    with source.open("rb") as handle:
        await run(c.upload_model, "m", "open", handle)
    assert (await run(c.get_model, "m", "open")).filename == "weights.bin"

    # From a pipe: the size is unknown, sent chunked.
    small = os.urandom(50_000)
    seen.clear()
    with pipe_with(small) as pipe:
        await run(c.upload_model, "m", "pipe", pipe, filename="piped.bin", progress=lambda *p: seen.append(p))
    assert seen[-1] == (len(small), None)
    stored = await run(c.get_model, "m", "pipe")
    assert (stored.size, stored.sha256, stored.filename) == (len(small), sha(small), "piped.bin")

    # To a path, with progress.
    seen.clear()
    dest = tmp_path / "out" / "copy.bin"
    dest.parent.mkdir()
    got = await run(c.download_model, "m", "path", dest, progress=lambda *p: seen.append(p))
    assert isinstance(got, Downloaded) and got == Downloaded(dest, BIG, sha(data))
    assert dest.read_bytes() == data and leftovers(dest.parent) == ["copy.bin"]
    assert seen[-1] == (BIG, BIG) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # ... as a str path, replacing what is there.
    dest.write_bytes(b"old")
    assert (await run(c.download_model, "m", "bytesio", str(dest))).path == dest and dest.read_bytes() == data

    # To file objects: a BytesIO (after what it already holds) and an open file.
    sink = io.BytesIO()
    sink.write(b"KEEP")
    got = await run(c.download_model, "m", "open", sink)
    assert got == Downloaded(None, BIG, sha(data)) and sink.getvalue() == b"KEEP" + data
    with (tmp_path / "opened.bin").open("wb") as handle:
        got = await run(c.download_model, "m", "pipe", handle)
    assert got.path is None and (tmp_path / "opened.bin").read_bytes() == small
    assert await run(c.read, calls.model_file("m", "pipe")) == small

    # The generic pair, on any file path.
    await run(c.upload, calls.model_file("m", "pipe"), io.BytesIO(b"replaced"), filename="r.bin")
    sink = io.BytesIO()
    assert (await run(c.download, calls.model_file("m", "pipe"), sink)).size == 8 and sink.getvalue() == b"replaced"

    # Every model file in one archive.
    archive = tmp_path / "models.zip"
    await run(c.download_models_archive, "models.zip", archive)
    with zipfile.ZipFile(archive) as z:
        assert len(z.namelist()) == 4
        assert sorted(hashlib.sha256(z.read(name)).hexdigest() for name in z.namelist()) == sorted(
            [sha(data)] * 3 + [sha(b"replaced")]
        )
    tar_bytes = io.BytesIO()
    await run(c.download_models_archive, "models.tar", tar_bytes)
    tar_bytes.seek(0)
    with tarfile.open(fileobj=tar_bytes) as tar:
        assert len(tar.getnames()) == 4


# --- integrity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_corrupted_file_raises_and_leaves_nothing(live_server, raw_db, connect, tmp_path, flavour):
    data = os.urandom(600_000)  # three GridFS chunks
    c = connect(flavour, live_server.url)
    await run(c.create_model, "m", "v1", "numpy")
    await run(c.upload_model, "m", "v1", io.BytesIO(data), filename="victim.bin")
    await run(c.create_strategy, "s")
    await run(c.upload_strategy, "s", io.BytesIO(cloudpickle.dumps({"x": 1})), filename="strategy.pkl")
    corrupt_stored_file(raw_db, "victim.bin")
    corrupt_stored_file(raw_db, "strategy.pkl")

    dest = tmp_path / "copy.bin"
    with pytest.raises(IntegrityError, match="ETag") as bad:
        await run(c.download_model, "m", "v1", dest)
    assert isinstance(bad.value, RepositoryError) and sha(data) in str(bad.value)
    assert bad.value.request_id and bad.value.request_id in str(bad.value)  # the GET that brought the bytes
    assert leftovers(tmp_path) == []  # neither copy.bin, copy.bin.part nor copy.bin.part.etag

    sink = io.BytesIO()
    sink.write(b"KEEP")
    with pytest.raises(IntegrityError):
        await run(c.download_model, "m", "v1", sink)
    assert sink.getvalue() == b"KEEP"  # rewound to where it started and cut there

    with pytest.raises(IntegrityError):
        await run(c.read, calls.model_file("m", "v1"))
    with pytest.raises(IntegrityError):
        await run(c.load_strategy, "s")  # caught before anything is unpickled
    with pytest.raises(IntegrityError):
        await run(c.download_strategy, "s", tmp_path / "s.pkl")
    assert leftovers(tmp_path) == []


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


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_retries_only_what_is_safe_to_repeat(live_server, connect, tmp_path, flavour):
    def client(plan: list[Any]) -> tuple[Any, Flaky]:
        transport = Flaky(plan)
        return connect(flavour, live_server.url, transport=transport), transport

    # Reads: after connection errors, timeouts and 503s.
    c, t = client([httpx.ConnectError, httpx.ReadTimeout])
    assert (await run(c.health))["status"] == "ok" and len(t.requests) == 3
    c, t = client([503, 503])
    assert (await run(c.list_models)).total == 0 and len(t.requests) == 3
    c, t = client([503] * 3)
    with pytest.raises(Unavailable) as gave_up:
        await run(c.list_models)
    assert gave_up.value.status == 503 and gave_up.value.detail == "injected: database unavailable"
    assert len(t.requests) == FAST.attempts
    c, t = client([httpx.ConnectError] * 5)
    with pytest.raises(Unavailable, match="ConnectError"):
        await run(c.get_model, "m", "v1")
    assert len(t.requests) == FAST.attempts

    # A create that may have reached the server is sent once ...
    c, t = client([httpx.ReadTimeout])
    with pytest.raises(Unavailable, match="ReadTimeout") as timed_out:
        await run(c.create_model, "m", "v1", "numpy")
    assert isinstance(timed_out.value.__cause__, httpx.ReadTimeout) and len(t.requests) == 1
    c, t = client([503])
    with pytest.raises(Unavailable, match="503"):
        await run(c.create_model, "m", "v1", "numpy")
    assert len(t.requests) == 1
    plain = connect(flavour, live_server.url)
    with pytest.raises(NotFound):
        await run(plain.get_model, "m", "v1")  # neither reached the server
    # ... but one whose connection was refused never reached it.
    c, t = client([httpx.ConnectError])
    assert (await run(c.create_model, "m", "v1", "numpy")).model_name == "m" and len(t.requests) == 2
    assert [q.method for q in t.requests] == ["POST", "POST"]

    # A whole-value replacement is repeated; a delete is not.
    c, t = client([httpx.ReadTimeout])
    await run(c.update_model_meta, "m", "v1", {"library": "numpy", "retried": True})
    assert len(t.requests) == 2 and (await run(plain.get_model, "m", "v1")).meta["retried"] is True
    c, t = client([httpx.ReadTimeout])
    with pytest.raises(Unavailable):
        await run(c.delete_model, "m", "v1")
    assert len(t.requests) == 1
    await run(plain.get_model, "m", "v1")  # still there

    # Uploads: a re-readable source is sent again, a pipe only after a refused connection.
    data = os.urandom(100_000)
    source = tmp_path / "w.bin"
    source.write_bytes(data)
    # (Counting PUTs: without an ETag in the answer, a HEAD then asks what was stored.)
    c, t = client([httpx.ReadTimeout, 503])
    assert (await run(c.upload_model, "m", "v1", source)).sha256 == sha(data)
    assert puts(t) == 3 and (await run(plain.get_model, "m", "v1")).sha256 == sha(data)
    c, t = client([httpx.ReadTimeout])
    with pytest.raises(Unavailable), pipe_with(b"streamed") as pipe:
        await run(c.upload_model, "m", "v1", pipe)
    assert puts(t) == 1
    c, t = client([httpx.ConnectError])
    with pipe_with(b"streamed") as pipe:
        await run(c.upload_model, "m", "v1", pipe)
    assert puts(t) == 2 and (await run(plain.get_model, "m", "v1")).sha256 == sha(b"streamed")

    # Downloads are reads.
    c, t = client([503, httpx.ReadTimeout])
    assert await run(c.read, calls.model_file("m", "v1")) == b"streamed" and len(t.requests) == 3


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_retry_after_is_honoured_within_bounds(live_server, connect, flavour):
    def client(plan: list[Any]) -> tuple[Any, Flaky]:
        transport = Flaky(plan)
        return connect(flavour, live_server.url, transport=transport), transport

    # A 503 asking for a second: the next try comes after it, not after FAST's few milliseconds.
    c, t = client([(503, {"Retry-After": "1"})])
    started = asyncio.get_running_loop().time()
    assert (await run(c.list_models)).total == 0 and len(t.requests) == 2
    assert asyncio.get_running_loop().time() - started >= 0.95
    # 429 (a proxy limiting the rate) is retried like 503; an HTTP date already past means now.
    c, t = client([(429, {"Retry-After": "0"}), (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})])
    assert (await run(c.health))["status"] == "ok" and len(t.requests) == 3
    # Longer than Retry.max_wait_s: raised at once, with the wait asked for.
    c, t = client([(503, {"Retry-After": "120"})])
    started = asyncio.get_running_loop().time()
    with pytest.raises(Unavailable) as later:
        await run(c.get_model, "m", "v1")
    assert later.value.retry_after == 120 and len(t.requests) == 1
    assert asyncio.get_running_loop().time() - started < 5
    c, t = client([(503, {"Retry-After": "1"})])
    c.client.retry = Retry(attempts=3, base_s=0.001, cap_s=0.005, max_wait_s=0.5)
    with pytest.raises(Unavailable):
        await run(c.list_models)
    assert len(t.requests) == 1
    # Bounded: attempts still cap the tries; 429 is RateLimited, an Unavailable.
    c, t = client([(429, {"Retry-After": "0"})] * 5)
    with pytest.raises(RateLimited) as limited:
        await run(c.list_models)
    assert isinstance(limited.value, Unavailable) and limited.value.status == 429 and len(t.requests) == FAST.attempts
    # A create is still sent once, whatever Retry-After says.
    c, t = client([(503, {"Retry-After": "0"})])
    with pytest.raises(Unavailable):
        await run(c.create_model, "m", "v1", "numpy")
    assert len(t.requests) == 1


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_every_error_from_an_answer_carries_its_request_id(live_server, connect, flavour):
    transport = Flaky()
    c = connect(flavour, live_server.url, transport=transport)
    with pytest.raises(NotFound) as missing:
        await run(c.get_model, "nope", "v1")
    request_id = missing.value.request_id
    assert request_id and len(request_id) == 32 and str(missing.value).endswith(f"(request id {request_id})")
    with pytest.raises(NotFound) as no_file:
        await run(c.download_model, "nope", "v1", io.BytesIO())  # a streamed GET
    assert no_file.value.request_id and no_file.value.request_id != request_id
    with pytest.raises(Invalid) as invalid:
        await run(c.create_model, "$x", "v1", "numpy")
    assert invalid.value.request_id and invalid.value.request_id in str(invalid.value)
    c = connect(flavour, live_server.url, transport=Flaky([(503, {"X-Request-ID": "given-by-a-proxy"})] * 5))
    with pytest.raises(Unavailable) as down:
        await run(c.list_models)
    assert down.value.request_id == "given-by-a-proxy"
    # No answer, no id.
    c = connect(flavour, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable) as unreachable:
        await run(c.health)
    assert unreachable.value.request_id is None


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_iterators_walk_every_page(mongo_url, connect, flavour):
    # A server whose pages hold at most 3 items: a page_size above that still yields everything.
    with LiveServer(create_app(make_settings(mongo_url, list_cap=3))) as server:
        c = connect(flavour, server.url)
        for i in range(7):
            await run(c.create_model, f"m{i}", "v1", "numpy")
        transport = Flaky()
        paged = connect(flavour, server.url, transport=transport)
        everything = [(m.model_name, m.model_version) for m in await collect(paged.iter_models(page_size=2))]
        assert sorted(everything) == [(f"m{i}", "v1") for i in range(7)] and len(set(everything)) == 7
        assert [q.url.params.get("offset") for q in transport.requests] == [None, "2", "4", "6"]  # no empty page asked
        transport.requests.clear()
        assert len(await collect(paged.iter_models())) == 7  # the server's page size, 3: 3 + 3 + 1
        assert [q.url.params.get("offset") for q in transport.requests] == [None, "3", "6"]
        assert all("limit" not in q.url.params for q in transport.requests)
        assert await collect(paged.iter_models(trained=True)) == []

        data = os.urandom(100)
        for i in (1, 4):
            await run(c.upload_model, f"m{i}", "v1", io.BytesIO(data))
        assert {m.model_name for m in await collect(c.iter_available_models(page_size=1))} == {"m1", "m4"}
        for i in range(4):
            await run(c.create_training_result, "m1", "v1", f"r{i}", {"loss": i})
        await run(c.create_training_result, "m2", "v1", "other", {"loss": 9})
        assert len(await collect(c.iter_training_results(page_size=2))) == 5
        mine = await collect(c.iter_model_training_results("m1", "v1", page_size=3))
        assert sorted(r.training_id for r in mine) == ["r0", "r1", "r2", "r3"]
        for i in range(4):
            await run(c.create_strategy, f"s{i}")
            await run(c.create_transformation, f"t{i}")
        assert {s.strategy_name for s in await collect(c.iter_strategies(page_size=3))} == {f"s{i}" for i in range(4)}
        assert {t.id for t in await collect(c.iter_transformations(page_size=3))} == {f"t{i}" for i in range(4)}

        await run(c.upload_strategy, "s0", io.BytesIO(b"pickled"), sign=False)
        spec = {"model": {"model_name": "m1", "model_version": "v1"}, "strategy": {"strategy_name": "s0"}}
        for i in range(4):
            await run(c.create_task, {**spec, "task_id": f"job{i}"})
        assert {t.task_id for t in await collect(c.iter_tasks(phase="Pending", page_size=3))} == {
            f"job{i}" for i in range(4)
        }
        for round in range(1, 6):
            await run(c.update_task_status, "job0", phase="Running", current_round=round, round={"round": round})
            await run(c.create_checkpoint, "job0", round, loss=1 / round)
        history = await collect(c.iter_task_history("job0", page_size=2))
        assert [r.round for r in history] == [1, 2, 3, 4, 5]
        assert [cp.round for cp in await collect(c.iter_checkpoints("job0", page_size=2))] == [1, 2, 3, 4, 5]
        audit = await collect(c.iter_audit(page_size=3))  # a plain list without a total: until an empty page
        assert len(audit) > 20 and len({(e["time"], e["path"], e["method"]) for e in audit}) == len(audit)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_uploads_return_what_was_stored(live_server, connect, tmp_path, flavour):
    c = connect(flavour, live_server.url)
    data = os.urandom(CHUNK + 99)
    source = tmp_path / "w.bin"
    source.write_bytes(data)
    await run(c.create_model, "m", "v1", "numpy")
    expected = Stored(len(data), sha(data))

    # Whatever this server answers (an ETag or not), the result is the stored file's.
    assert await run(c.upload_model, "m", "v1", source) == expected
    item = await run(c.get_model, "m", "v1")
    assert (item.size, item.sha256) == (expected.size, expected.sha256)
    assert await run(c.stat_file, calls.model_file("m", "v1")) == expected

    # An answer with the ETag: nothing more is asked.
    transport = EditedPutAnswers(f'"{sha(data)}"')
    r = connect(flavour, live_server.url, transport=transport)
    assert await run(r.upload_model, "m", "v1", io.BytesIO(data)) == expected
    assert [q.method for q in transport.requests] == ["PUT"]
    # An ETag that is not what was sent: the server stored something else.
    r = connect(flavour, live_server.url, transport=EditedPutAnswers(f'"{sha(b"other")}"'))
    with pytest.raises(IntegrityError, match="stored sha256"):
        await run(r.upload_model, "m", "v1", io.BytesIO(data))
    # No ETag: a HEAD of the file's download path says what is stored.
    transport = EditedPutAnswers(None)
    r = connect(flavour, live_server.url, transport=transport)
    assert await run(r.upload_model, "m", "v1", source) == expected
    assert [(q.method, q.url.path) for q in transport.requests] == [("PUT", "/model/m/v1"), ("HEAD", "/model/m/v1")]
    await run(c.create_training_result, "m", "v1", "r1", {"loss": 1})
    transport.requests.clear()
    assert await run(r.upload_weights, "m", "v1", "r1", "1", io.BytesIO(b"weights")) == Stored(7, sha(b"weights"))
    assert transport.requests[-1].url.path == "/training-results/weights/m/v1/r1"
    await run(c.create_strategy, "s")
    assert await run(r.upload_strategy, "s", io.BytesIO(b"code"), sign=False) == Stored(4, sha(b"code"))
    # The generic upload to a path without HEAD: the bytes that were sent and accepted.
    stored = await run(r.upload, calls.weights_upload("m", "v1", "r1", "1"), io.BytesIO(b"again"))
    assert stored == Stored(5, sha(b"again")) == await run(c.stat_file, calls.weights_download("m", "v1", "r1"))
    with pytest.raises(NotFound):
        await run(c.stat_file, calls.model_file("m", "v9"))


# --- signed artifacts ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["strategy", "transformation"])
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_signed_artifacts(live_server, connect, tmp_path, caplog, flavour, kind):
    publisher = connect(flavour, live_server.url)
    impostor = connect(flavour, live_server.url, keyring=IMPOSTOR)
    stranger = connect(flavour, live_server.url, keyring=STRANGER)
    nobody = connect(flavour, live_server.url, keyring=NO_KEYS)

    def method(client: Any, action: str) -> Any:
        return getattr(client, f"{action}_{kind}")

    async def create(name: str) -> None:
        if kind == "strategy":
            await run(publisher.create_strategy, name, "described", {"class": "Mine"})
        else:
            await run(
                publisher.create_transformation,
                name,
                parameter_types={"k": "int"},
                default_values={"k": 1},
                outputs=["x"],
                needs={"RAM": 1},
                description="described",
                meta={"class": "Mine"},
            )

    artifact = {"kind": kind, "weights": [1, 2, 3], "fn": double}
    pickled = cloudpickle.dumps(artifact)
    source = tmp_path / "artifact.pkl"
    source.write_bytes(pickled)

    # Signed with the publisher's key (from a path); the signature lands in meta, the rest is kept.
    await create("good")
    await run(method(publisher, "upload"), "good", source)
    item = await run(method(publisher, "get"), "good")
    assert isinstance(item, StrategyOut if kind == "strategy" else TransformationOut)
    assert item.meta["key_id"] == "k1" and item.meta["sha256"] == item.sha256 == sha(pickled)
    assert item.meta["size"] == item.size == len(pickled) and item.meta["algorithm"] == "ed25519"
    assert item.meta["class"] == "Mine" and item.filename == "artifact.pkl"
    if kind == "strategy":
        assert item.strategy_description == "described"
    else:
        assert (item.parameter_types, item.outputs, item.needs["RAM"]) == ({"k": "int"}, ["x"], 1)
        assert item.description == "described"

    loaded = await run(method(publisher, "load"), "good")
    assert loaded["weights"] == [1, 2, 3] and loaded["fn"](21) == 42
    verifier = connect(flavour, live_server.url, keyring=Keyring.verifier({"k1": public_key_of(PUBLISHER_KEY)}))
    assert (await run(method(verifier, "load"), "good"))["kind"] == kind
    raw = tmp_path / "raw.pkl"
    assert (await run(method(publisher, "download"), "good", raw)).sha256 == sha(pickled)
    assert raw.read_bytes() == pickled
    with pytest.raises(SignatureError, match="bad signature"):
        await run(method(impostor, "load"), "good")
    with pytest.raises(SignatureError, match="key id 'k1', which is not trusted"):
        await run(method(stranger, "load"), "good")

    # Signed from a file object with a progress callback.
    await create("buffered")
    seen: list[tuple[int, int | None]] = []
    await run(method(publisher, "upload"), "buffered", io.BytesIO(pickled), progress=lambda *p: seen.append(p))
    assert seen[-1] == (len(pickled), len(pickled))
    assert (await run(method(publisher, "load"), "buffered"))["weights"] == [1, 2, 3]

    # Unsigned: refused unless allow_unsigned, which warns.
    await create("plain")
    await run(method(publisher, "upload"), "plain", io.BytesIO(pickled), sign=False)
    assert "signature" not in (await run(method(publisher, "get"), "plain")).meta
    with pytest.raises(SignatureError, match="not signed"):
        await run(method(publisher, "load"), "plain")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert (await run(method(nobody, "load"), "plain", allow_unsigned=True))["fn"](1) == 2
    assert "WITHOUT checking its signature" in caplog.text
    # A client without a key uploads unsigned by default, and cannot be made to sign.
    await run(method(nobody, "upload"), "plain", io.BytesIO(pickled))
    with pytest.raises(SignatureError, match="no signing key"):
        await run(method(nobody, "upload"), "plain", io.BytesIO(pickled), sign=True)
    # Signing reads the source twice: a pipe is refused before anything is sent.
    with pytest.raises(SignatureError, match="seekable"), pipe_with(pickled) as pipe:
        await run(method(publisher, "upload"), "plain", pipe)

    # Replacing a signed file without signing leaves a signature that no longer matches.
    await run(method(publisher, "upload"), "good", io.BytesIO(cloudpickle.dumps({"evil": True})), sign=False)
    with pytest.raises(SignatureError, match="does not match"):
        await run(method(publisher, "load"), "good")


def test_an_answer_that_is_not_the_api_is_a_clear_error():
    """Something else on the port (a proxy's login page): a RepositoryError naming the host."""
    page = httpx.MockTransport(lambda request: httpx.Response(200, html="<html>login</html>"))
    with RepositoryClient("http://proxy.example", transport=page) as repo:
        with pytest.raises(RepositoryError, match=r"unexpected answer.*is proxy\.example an FL repository"):
            repo.list_models()


# --- coverage of the SDK ------------------------------------------------------------------------


def test_every_public_method_was_called(request):
    """Runs last: every public method of both clients was used by the tests above."""
    import sys

    module = sys.modules[__name__]
    everything = {name for name in vars(module) if name.startswith("test_")} - {request.node.originalname}
    selected = {item.originalname for item in request.session.items if item.module is module}
    if not everything <= selected or request.session.testsfailed:
        pytest.skip("only meaningful when the whole module ran and passed")
    for flavour, cls in CLASSES.items():
        assert public_methods(cls) - USED[flavour] == set(), flavour
