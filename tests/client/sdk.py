"""What the SDK tests share: the two client flavours, recorded clients (which public methods the tests
used), transports that fail on purpose, and small helpers."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from flrepo.client import (
    AsyncRepositoryClient,
    Keyring,
    RepositoryClient,
    Retry,
)
from flrepo.client.transfer import CHUNK

FLAVOURS = ["sync", "async"]
# The modules whose tests use recorded clients (Recorded, below): test_sdk_coverage checks that together they
# called every public method, so under pytest-xdist they run in one worker (tests/conftest.py).
SDK_MODULES = {
    "tests.client.test_client_shapes",
    "tests.client.test_json_calls",
    "tests.client.test_typed_errors",
    "tests.client.test_transfers",
    "tests.client.test_resume",
    "tests.client.test_retries",
    "tests.client.test_paging",
    "tests.client.test_signed_artifacts",
    "tests.client.test_task_claims_sdk",
}
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


async def wait_for_async(get: Callable[[], Any], done: Callable[[Any], bool], within: float = 60) -> Any:
    """Ask `get()` until `done` holds for its answer (the server writes some records after answering)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await get()
        if done(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


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
