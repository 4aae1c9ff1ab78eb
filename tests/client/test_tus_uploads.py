"""The SDK's resumable uploads: files from the tus threshold on go through /uploads, resume after a
dropped connection (HEAD for the offset, then the rest), each part with its sha256."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from flrepo.client import AsyncRepositoryClient, RepositoryClient, tus
from tests.helpers import payload, sha

MiB = 1024 * 1024


class CutParts(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A real transport whose n-th PATCH (per `cuts`: n → bytes) sends that many body bytes, then drops
    the connection. Records the method of every request and the PATCH body bytes sent."""

    def __init__(self, cuts: dict[int, int] | None = None) -> None:
        self.cuts = dict(cuts or {})
        self.methods: list[str] = []
        self.checksums: list[str] = []
        self.sent = 0
        self._sync = httpx.HTTPTransport()
        self._async = httpx.AsyncHTTPTransport()

    def _cut(self, request: httpx.Request) -> tuple[httpx.Request, int | None]:
        self.methods.append(request.method)
        if request.method != "PATCH":
            return request, None
        self.checksums.append(request.headers.get("upload-checksum", ""))
        cut = self.cuts.get(self.methods.count("PATCH"))
        body = request.read()
        self.sent += len(body) if cut is None else cut
        return request, cut

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request, cut = self._cut(request)
        if cut is not None:
            body = request.content

            def stream() -> Iterator[bytes]:
                yield body[:cut]
                raise httpx.WriteError("injected: connection dropped mid-part")

            request = httpx.Request("PATCH", request.url, headers=request.headers, content=stream())
        return self._sync.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request, cut = self._cut(request)
        if cut is not None:
            body = request.content

            async def stream():  # type: ignore[no-untyped-def]
                yield body[:cut]
                raise httpx.WriteError("injected: connection dropped mid-part")

            request = httpx.Request("PATCH", request.url, headers=request.headers, content=stream())
        return await self._async.handle_async_request(request)


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(tus, "PART_BYTES", 1 * MiB)


def test_a_large_upload_resumes_after_a_dropped_connection(live_server, tmp_path, small_parts):
    data = payload(3 * MiB + 12345)
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    transport = CutParts({2: MiB // 2})  # the second part's connection drops half-way
    with RepositoryClient(live_server.url, transport=transport, tus_threshold=MiB) as repo:
        repo.create_model("big", "v1", library="numpy")
        seen: list[int] = []
        repo.upload_model("big", "v1", source, progress=lambda done, total: seen.append(done))
        back = repo.download_model("big", "v1", tmp_path / "copy.bin")
    assert back.sha256 == sha(data)
    assert "PUT" not in transport.methods
    # Created once, the cut part resent after asking for the offset, never restarted from zero.
    assert transport.methods.count("POST") == 2  # the model, then the upload
    assert "HEAD" in transport.methods[transport.methods.index("PATCH") :]
    assert transport.methods.count("PATCH") == 5
    assert transport.sent == len(data) + MiB // 2
    assert all(c.startswith("sha256 ") for c in transport.checksums)
    assert seen[-1] == len(data)


async def test_the_async_client_resumes_too(live_server, tmp_path, small_parts):
    data = payload(2 * MiB + 7)
    transport = CutParts({1: 1000})
    async with AsyncRepositoryClient(live_server.url, transport=transport, tus_threshold=MiB) as repo:
        await repo.create_model("big", "v2", library="numpy")
        await repo.upload_model("big", "v2", _file(tmp_path, data))
        back = await repo.download_model("big", "v2", tmp_path / "copy.bin")
    assert back.sha256 == sha(data)
    assert transport.methods.count("PATCH") == 4 and "PUT" not in transport.methods


def test_below_the_threshold_an_upload_is_one_put(live_server, tmp_path, monkeypatch):
    monkeypatch.setenv("FLREPO_TUS_THRESHOLD_BYTES", str(10 * MiB))
    transport = CutParts()
    with RepositoryClient(live_server.url, transport=transport) as repo:
        assert repo.tus_threshold == 10 * MiB
        repo.create_model("small", "v1", library="numpy")
        repo.upload_model("small", "v1", _file(tmp_path, payload(MiB)))
    assert transport.methods == ["POST", "PUT"]


def test_a_refused_target_raises_the_typed_error(live_server, tmp_path, small_parts):
    from flrepo.client import NotFound

    with RepositoryClient(live_server.url, tus_threshold=MiB) as repo, pytest.raises(NotFound):
        repo.upload_model("missing", "v1", _file(tmp_path, payload(2 * MiB)))


def _file(tmp_path, data: bytes):  # type: ignore[no-untyped-def]
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return path
