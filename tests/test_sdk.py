"""The Python SDK (app.client) against a live server: every method of both clients, typed errors,
streaming and verified transfers, resume, retries and signed artifacts."""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import zipfile
from typing import Any

import cloudpickle
import httpx
import pytest
import yaml

from app.auth import hash_key
from app.client import (
    AsyncRepositoryClient,
    Conflict,
    Forbidden,
    IntegrityError,
    Invalid,
    Keyring,
    NotFound,
    Page,
    RepositoryClient,
    RepositoryError,
    Retry,
    SignatureError,
    TooLarge,
    Unauthorized,
    Unavailable,
    calls,
)
from app.devdb import free_port
from app.main import create_app
from app.schemas import ModelOut, StrategyOut, TrainingResultOut, TransformationOut
from app.tasks import TaskOut
from tests.conftest import LiveServer, make_settings

KEYS = Keyring("pub", {"pub": b"publisher-secret"})
FAST = Retry(attempts=3, base_s=0.001, cap_s=0.01)
NOT_ENDPOINTS = {"send", "close", "aclose"}


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_") and name not in NOT_ENDPOINTS}


class Recorder:
    """Passes every attribute through and remembers which public methods were used."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.used.add(name)
        return getattr(self.client, name)


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """One scenario serves both clients: await what the async one returns."""
    result = fn(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def test_both_clients_have_the_same_methods():
    assert _public(RepositoryClient) == _public(AsyncRepositoryClient)
    # Every call shape in calls.py is a method of both.
    shapes = {
        name
        for name, fn in vars(calls).items()
        if inspect.isfunction(fn) and fn.__module__ == calls.__name__ and not name.startswith("_")
    }
    shapes -= {"seg", "transformation_body", "model_file", "weights_upload", "weights_download"}
    shapes -= {"strategy_file", "transformation_file", "models_archive"}
    assert shapes <= _public(RepositoryClient), shapes - _public(RepositoryClient)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_every_method(live_server, tmp_path, flavour):
    client = (RepositoryClient if flavour == "sync" else AsyncRepositoryClient)(live_server.url, keyring=KEYS)
    c = Recorder(client)
    try:
        assert await call(c.health) == {"status": "ok"}
        assert (await call(c.ready))["status"] == "ready"

        # --- models
        model = await call(c.create_model, "m", "v1", "numpy", features=64)
        assert isinstance(model, ModelOut) and model.meta["library"] == "numpy" and model.meta["features"] == 64
        with pytest.raises(Conflict, match="already exists") as conflict:
            await call(c.create_model, "m", "v1", "numpy")
        assert conflict.value.status == 409 and "already exists" in conflict.value.detail
        await call(c.create_model, "m", "v2", "numpy")
        assert (await call(c.get_model, "m", "v1")).size is None
        await call(c.update_model_meta, "m", "v1", {"library": "numpy", "features": 32})
        assert (await call(c.get_model, "m", "v1")).meta["features"] == 32

        data = os.urandom(3 * 1024 * 1024 + 1)
        source = tmp_path / "model.bin"
        source.write_bytes(data)
        seen: list[tuple[int, int | None]] = []
        await call(c.upload_model, "m", "v1", source, progress=lambda done, total: seen.append((done, total)))
        assert seen[-1] == (len(data), len(data)) and len(seen) == 4  # 1 MiB pieces
        stored = await call(c.get_model, "m", "v1")
        assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.filename == "model.bin"
        done = await call(c.download_model, "m", "v1", tmp_path / "copy.bin")
        assert done.path == tmp_path / "copy.bin" and done.sha256 == stored.sha256 and done.size == len(data)
        assert (tmp_path / "copy.bin").read_bytes() == data
        assert await call(c.read, calls.model_file("m", "v1")) == data
        # The generic pair, from and to file objects.
        await call(c.upload, calls.model_file("m", "v2"), io.BytesIO(b"second"), filename="two.bin")
        sink = io.BytesIO()
        assert (await call(c.download, calls.model_file("m", "v2"), sink)).size == 6 and sink.getvalue() == b"second"

        listed = await call(c.list_models, limit=1)
        assert isinstance(listed, Page) and len(listed) == 1 and listed.total == 2
        assert [m.model_version for m in await call(c.list_models, trained=False)] == ["v1", "v2"]
        assert list(await call(c.list_models, trained=True)) == []
        assert {m.model_version for m in await call(c.available_models)} == {"v1", "v2"}
        archive = io.BytesIO()
        await call(c.download_models_archive, "models.zip", archive)
        assert len(zipfile.ZipFile(archive).namelist()) == 2

        # --- training results
        result = await call(c.create_training_result, "m", "v1", "r1", {"accuracy": 0.9, "rounds": 3})
        assert isinstance(result, TrainingResultOut) and result.results == {"accuracy": 0.9, "rounds": 3}
        await call(c.upload_weights, "m", "v1", "r1", "1", io.BytesIO(b"weights"))
        weights = io.BytesIO()
        await call(c.download_weights, "m", "v1", "r1", weights)
        assert weights.getvalue() == b"weights"
        assert (await call(c.get_training_result, "m", "v1", "r1")).size == len(b"weights")
        assert [r.training_id for r in await call(c.list_model_training_results, "m", "v1")] == ["r1"]
        assert (await call(c.list_training_results)).total == 1
        assert [m.model_version for m in await call(c.list_models, trained=True)] == ["v1"]

        # --- strategies (signed by the client's publisher key)
        strategy = {"kind": "a picklable stand-in for a strategy", "mu": 0.1}
        created = await call(c.create_strategy, "s", "mine", {"class": "X"})
        assert isinstance(created, StrategyOut) and created.meta == {"class": "X"}
        await call(c.upload_strategy, "s", io.BytesIO(cloudpickle.dumps(strategy)), filename="s.pkl")
        signed = await call(c.get_strategy, "s")
        assert signed.meta["class"] == "X" and signed.meta["key_id"] == "pub" and signed.meta["sha256"] == signed.sha256
        await call(c.update_strategy_meta, "s", {**signed.meta, "note": "kept"}, description="renamed")
        assert (await call(c.get_strategy, "s")).strategy_description == "renamed"
        assert [s.strategy_name for s in await call(c.list_strategies)] == ["s"]
        raw = io.BytesIO()
        await call(c.download_strategy, "s", raw)
        assert cloudpickle.loads(raw.getvalue()) == strategy
        assert await call(c.load_strategy, "s") == strategy

        # --- transformations
        transformation = {"scale": 2}
        created_t = await call(
            c.create_transformation, "t.x", parameter_types={"scale": "int"}, default_values={"scale": 1}, outputs=["x"]
        )
        assert isinstance(created_t, TransformationOut) and created_t.parameter_types == {"scale": "int"}
        await call(c.upload_transformation, "t.x", io.BytesIO(cloudpickle.dumps(transformation)))
        current = await call(c.get_transformation, "t.x")
        assert current.meta["key_id"] == "pub" and current.outputs == ["x"]  # signing kept the aerOS fields
        await call(
            c.update_transformation_meta,
            "t.x",
            parameter_types={"scale": "float"},
            default_values={"scale": 1.5},
            outputs=["x"],
            meta=current.meta,
        )
        assert (await call(c.get_transformation, "t.x")).default_values == {"scale": 1.5}
        assert [t.id for t in await call(c.list_transformations)] == ["t.x"]
        raw = io.BytesIO()
        await call(c.download_transformation, "t.x", raw)
        assert hashlib.sha256(raw.getvalue()).hexdigest() == current.sha256
        assert await call(c.load_transformation, "t.x") == transformation

        # --- tasks
        spec = {
            "task_id": "job",
            "model": {"model_name": "m", "model_version": "v1"},
            "strategy": {"strategy_name": "s"},
            "transformations": [{"id": "t.x"}],
        }
        task = await call(c.create_task, spec)
        assert isinstance(task, TaskOut) and task.phase == "Pending"
        assert [t.task_id for t in await call(c.list_tasks, phase="Pending")] == ["job"]
        running = await call(c.update_task_status, "job", phase="Running", current_round=1)
        assert running.phase == "Running" and running.current_round == 1
        with pytest.raises(Conflict):
            await call(c.delete_task, "job")
        await call(c.update_task_status, "job", phase="Succeeded")
        assert (await call(c.get_task, "job")).completion_time is not None
        assert list(await call(c.list_tasks, phase="Running")) == []
        assert len(await call(c.list_audit, limit=5)) == 5

        # --- deletes
        await call(c.delete_task, "job")
        await call(c.delete_training_result, "m", "v1", "r1")
        await call(c.delete_strategy, "s")
        await call(c.delete_transformation, "t.x")
        await call(c.delete_model, "m", "v1")
        with pytest.raises(NotFound):
            await call(c.get_model, "m", "v1")
        with pytest.raises(NotFound):
            await call(c.get_task, "job")
    finally:
        await call(client.close if flavour == "sync" else client.aclose)
    assert _public(type(client)) - c.used == set()


def test_invalid_and_not_found_carry_the_detail(live_server):
    with RepositoryClient(live_server.url) as repo:
        with pytest.raises(Invalid, match="model_name") as invalid:
            repo.create_model("$m", "v1", "numpy")
        assert invalid.value.status == 422 and isinstance(invalid.value.detail, list)
        with pytest.raises(NotFound, match="not found") as missing:
            repo.get_strategy("nope")
        assert missing.value.status == 404
        with pytest.raises(NotFound):
            repo.download_model("nope", "v1", io.BytesIO())


async def test_too_large_unauthorized_forbidden_unavailable(mongo_url, tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        yaml.safe_dump(
            [
                {"id": "r", "role": "reader", "sha256": hash_key("reader-key")},
                {"id": "w", "role": "writer", "sha256": hash_key("writer-key")},
            ]
        )
    )
    settings = make_settings(mongo_url, api_keys_file=keys, max_upload_bytes=1000)
    with LiveServer(create_app(settings)) as server:
        with pytest.raises(Unauthorized):
            RepositoryClient(server.url).list_models()
        async with AsyncRepositoryClient(server.url, api_key="reader-key") as reader:
            assert list(await reader.list_models()) == []
            with pytest.raises(Forbidden):
                await reader.create_model("m", "v1", "numpy")
        with RepositoryClient(server.url, api_key="writer-key") as writer:
            writer.create_model("m", "v1", "numpy")
            with pytest.raises(TooLarge):
                writer.upload_model("m", "v1", io.BytesIO(b"x" * 5000))
            assert writer.get_model("m", "v1").size is None  # nothing stored
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match="cannot reach"):
        RepositoryClient(closed, retry=FAST).health()
    async with AsyncRepositoryClient(closed, retry=FAST) as unreachable:
        with pytest.raises(Unavailable):
            await unreachable.health()


def _corrupt_first_chunk(raw_db) -> None:
    chunk = raw_db[1]["fs.chunks"].find_one({})
    data = bytearray(chunk["data"])
    data[0] ^= 0xFF
    raw_db[1]["fs.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(data)}})


async def test_corrupted_download_raises_and_leaves_nothing(live_server, raw_db, tmp_path):
    with RepositoryClient(live_server.url) as repo:
        repo.create_model("m", "v1", "numpy")
        repo.upload_model("m", "v1", io.BytesIO(os.urandom(300_000)))
    _corrupt_first_chunk(raw_db)
    dest = tmp_path / "copy.bin"
    with RepositoryClient(live_server.url) as repo:
        with pytest.raises(IntegrityError, match="ETag"):
            repo.download_model("m", "v1", dest)
        sink = io.BytesIO()
        with pytest.raises(IntegrityError):
            repo.download_model("m", "v1", sink)
        assert sink.getvalue() == b""  # a file object is rewound and truncated
    async with AsyncRepositoryClient(live_server.url) as repo:
        with pytest.raises(IntegrityError):
            await repo.download_model("m", "v1", dest)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_resume_from_a_part_left_earlier(live_server, tmp_path, flavour):
    data = os.urandom(3 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    half = 1024 * 1024 + 17
    with RepositoryClient(live_server.url) as repo:
        repo.create_model("m", "v1", "numpy")
        repo.upload_model("m", "v1", io.BytesIO(data))
    dest = tmp_path / "copy.bin"
    (tmp_path / "copy.bin.part").write_bytes(data[:half])
    (tmp_path / "copy.bin.part.etag").write_text(f'"{digest}"')
    seen: list[int] = []
    client = (RepositoryClient if flavour == "sync" else AsyncRepositoryClient)(live_server.url)
    done = await call(client.download_model, "m", "v1", dest, progress=lambda d, t: seen.append(d))
    assert done.sha256 == digest and dest.read_bytes() == data
    # Only the rest was fetched: progress starts past what was already there.
    assert seen[0] > half and seen[-1] == len(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.bin"]

    # A part of another file (stale ETag) is not spliced in: the whole file comes again.
    (tmp_path / "other.part").write_bytes(b"\0" * half)
    (tmp_path / "other.part.etag").write_text('"' + "0" * 64 + '"')
    seen.clear()
    await call(client.download_model, "m", "v1", tmp_path / "other", progress=lambda d, t: seen.append(d))
    assert (tmp_path / "other").read_bytes() == data and seen[0] <= 1024 * 1024
    await call(client.close if flavour == "sync" else client.aclose)


class _Cut(httpx.SyncByteStream):
    """A response body that stops with a protocol error after `limit` bytes."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int) -> None:
        self.inner, self.limit = inner, limit

    def __iter__(self):
        sent = 0
        for chunk in self.inner:
            if sent + len(chunk) >= self.limit:
                yield chunk[: self.limit - sent]
                raise httpx.RemoteProtocolError("peer closed connection")
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class Flaky(httpx.BaseTransport):
    """A real transport whose first answers are replaced by failures, one per `plan` entry."""

    def __init__(self, plan: list[Any]) -> None:
        self.real = httpx.HTTPTransport()
        self.plan = list(plan)
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        failure = self.plan.pop(0) if self.plan else None
        if isinstance(failure, type) and issubclass(failure, Exception):
            raise failure("injected", request=request)
        if failure == 503:
            return httpx.Response(503, json={"detail": "database unavailable"}, request=request)
        response = self.real.handle_request(request)
        if isinstance(failure, tuple) and failure[0] == "cut":
            assert isinstance(response.stream, httpx.SyncByteStream)
            response.stream = _Cut(response.stream, failure[1])
        return response


def test_retries_only_what_is_safe(live_server):
    def client(plan: list[Any]) -> tuple[RepositoryClient, Flaky]:
        transport = Flaky(plan)
        return RepositoryClient(live_server.url, retry=FAST, transport=transport), transport

    repo, seen = client([httpx.ConnectError, httpx.ReadTimeout])
    assert repo.health()["status"] == "ok" and len(seen.requests) == 3
    repo, seen = client([503])
    assert repo.list_models().total == 0 and len(seen.requests) == 2
    # A create that may have reached the server is not sent again ...
    repo, seen = client([httpx.ReadTimeout])
    with pytest.raises(Unavailable, match="ReadTimeout"):
        repo.create_model("m", "v1", "numpy")
    assert len(seen.requests) == 1
    repo, seen = client([503])
    with pytest.raises(Unavailable, match="503"):
        repo.create_model("m", "v1", "numpy")
    assert len(seen.requests) == 1
    # ... but one whose connection was refused never reached it.
    repo, seen = client([httpx.ConnectError])
    assert repo.create_model("m", "v1", "numpy").model_name == "m" and len(seen.requests) == 2
    # Give up after the configured attempts.
    repo, seen = client([httpx.ConnectError] * 5)
    with pytest.raises(Unavailable):
        repo.get_model("m", "v1")
    assert len(seen.requests) == FAST.attempts


def test_a_dropped_download_resumes_in_the_same_call(live_server, tmp_path):
    data = os.urandom(2 * 1024 * 1024 + 3)
    with RepositoryClient(live_server.url) as repo:
        repo.create_model("m", "v1", "numpy")
        repo.upload_model("m", "v1", io.BytesIO(data))
    transport = Flaky([None, ("cut", 700_000)])  # the model's metadata, then the file cut short
    with RepositoryClient(live_server.url, retry=FAST, transport=transport) as repo:
        repo.get_model("m", "v1")
        done = repo.download_model("m", "v1", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == data and done.size == len(data)

    first, second = transport.requests[1], transport.requests[2]
    assert "range" not in first.headers
    assert second.headers["range"] == "bytes=700000-" and second.headers["if-range"] == f'"{done.sha256}"'


class AsyncFlaky(httpx.AsyncBaseTransport):
    def __init__(self, failures: int) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.failures = failures
        self.count = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        if self.count <= self.failures:
            raise httpx.ConnectError("injected", request=request)
        return await self.real.handle_async_request(request)


async def test_async_client_retries(live_server):
    transport = AsyncFlaky(2)
    async with AsyncRepositoryClient(live_server.url, retry=FAST, transport=transport) as repo:
        assert (await repo.health())["status"] == "ok"
    assert transport.count == 3


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_signatures_through_the_sdk(live_server, flavour):
    cls = RepositoryClient if flavour == "sync" else AsyncRepositoryClient
    publisher = cls(live_server.url, keyring=KEYS)
    stranger = cls(live_server.url, keyring=Keyring("pub", {"pub": b"not the publisher's key"}))
    nobody = cls(live_server.url, keyring=Keyring(None, {}))
    try:
        for kind in ("strategy", "transformation"):
            create = publisher.create_strategy if kind == "strategy" else publisher.create_transformation
            upload = publisher.upload_strategy if kind == "strategy" else publisher.upload_transformation
            await call(create, "good")
            await call(create, "plain")
            await call(upload, "good", io.BytesIO(cloudpickle.dumps([kind, 1])))
            await call(upload, "plain", io.BytesIO(cloudpickle.dumps([kind, 2])), sign=False)
            with pytest.raises(SignatureError, match="no signing key"):
                await call(getattr(nobody, f"upload_{kind}"), "plain", io.BytesIO(b"x"), sign=True)

            assert await call(getattr(publisher, f"load_{kind}"), "good") == [kind, 1]
            with pytest.raises(SignatureError, match="bad signature"):
                await call(getattr(stranger, f"load_{kind}"), "good")
            with pytest.raises(SignatureError, match="not signed"):
                await call(getattr(publisher, f"load_{kind}"), "plain")
            assert await call(getattr(publisher, f"load_{kind}"), "plain", allow_unsigned=True) == [kind, 2]
    finally:
        for client in (publisher, stranger, nobody):
            await call(client.close if flavour == "sync" else client.aclose)


def test_an_answer_that_is_not_the_api_is_a_clear_error():
    """Something else on the port (a proxy's login page): a RepositoryError naming the host."""
    page = httpx.MockTransport(lambda request: httpx.Response(200, html="<html>login</html>"))
    with RepositoryClient("http://proxy.example", transport=page) as repo:
        with pytest.raises(RepositoryError, match=r"unexpected answer.*is proxy\.example an FL repository"):
            repo.list_models()
