"""Every connection is bounded: header size and count, time to send a request head, silence during a
body; nothing in the answers is built from what the client sent (no `server` header, no redirect from
`Host`); /metrics needs a key; text logs cannot be forged. On real sockets: `flrepo serve` itself
(a subprocess) where memory is measured, the tests' live server (the same configuration) elsewhere."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from flrepo.logs import TextFormatter
from flrepo.server.auth import Role, new_key
from flrepo.server.embedded import api_server
from flrepo.server.settings import Settings
from tests.helpers import LiveServer, create_app, drop, make_settings, wait_for

MiB = 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _send_huge_header(url: str, size: int) -> None:
    """A request whose one header is `size` bytes, sent as fast as the server takes it."""
    with socket.create_connection(_address(url), timeout=10) as sock:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"a" * MiB
            for _ in range(size // MiB):
                sock.sendall(chunk)
            sock.sendall(b"\r\n\r\n")
            sock.recv(100)
        except OSError:
            pass  # the server closed the connection: what it should do


@pytest.fixture(scope="module")
def serve(mongo_url, tmp_path_factory) -> Iterator[tuple[str, int]]:
    """`flrepo serve` as every deployment runs it (subprocess), on a database of its own. One for the module:
    its tests only send heads and read /health and /model (nothing stored), and a start is seconds each."""
    settings = make_settings(mongo_url)
    env = {"FLREPO_DB_NAME": settings.db_name, "FLREPO_GRIDFS_DB_NAME": settings.gridfs_db_name}
    try:
        with api_server(tmp_path_factory.mktemp("serve"), mongo_url, **env) as (url, proc):
            yield url, proc.pid
    finally:
        drop(settings)


def test_a_64_mib_header_is_refused_without_being_read_into_memory(serve):
    url, pid = serve
    for _ in range(20):
        httpx.get(f"{url}/health")
    baseline = peak = _rss(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        _send_huge_header(url, 64 * MiB)
        _send_huge_header(url, 100 * MiB)  # the reproduction's size
    finally:
        done.set()
        sampler.join()
    print(f"\nmeasured: RSS growth {(peak - baseline) / MiB:.1f} MiB under 64 MiB and 100 MiB headers")
    assert peak - baseline < 16 * MiB, f"RSS grew by {(peak - baseline) / MiB:.1f} MiB"
    assert httpx.get(f"{url}/health").status_code == 200


@pytest.mark.parametrize("size", [40 * 1024, 100 * 1024, 3 * MiB])
def test_an_oversized_head_gets_431_and_a_normal_one_passes(serve, size):
    url, _ = serve
    r = httpx.get(f"{url}/health", headers={"X-Big": "a" * size})
    assert r.status_code == 431, r.text  # from the parser, or from RequestContext when it came in one read
    assert httpx.get(f"{url}/health", headers={"X-Fine": "a" * (8 * 1024)}).status_code == 200


def test_too_many_header_lines_get_431(serve):
    url, _ = serve
    many = [(f"x-h{n}", "1") for n in range(150)]
    r = httpx.get(f"{url}/health", headers=many)
    assert r.status_code == 431 and "header" in r.json()["detail"]
    assert httpx.get(f"{url}/health", headers=many[:50]).status_code == 200


def test_health_stays_fast_while_huge_headers_arrive(serve):
    url, _ = serve
    senders = [threading.Thread(target=_send_huge_header, args=(url, 40 * MiB)) for _ in range(3)]
    for sender in senders:
        sender.start()
    try:
        slowest = 0.0
        for _ in range(10):
            started = time.perf_counter()
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
    finally:
        for sender in senders:
            sender.join()
    assert slowest < 1.0, f"/health took {slowest:.2f} s"  # 2.8 s before; generous for a loaded machine


def test_no_server_header_and_no_redirect_built_from_host(serve):
    url, _ = serve
    r = httpx.get(f"{url}/health")
    assert "server" not in r.headers
    r = httpx.get(f"{url}/model/", headers={"Host": "evil.example"})
    assert r.status_code != 307 and "location" not in r.headers
    assert "evil.example" not in r.text


@pytest.fixture
def quick(mongo_url) -> Iterator[tuple[str, Settings]]:
    """A live server with 1-second head and idle timeouts."""
    settings = make_settings(mongo_url, header_timeout_s=1, idle_timeout_s=1)
    with LiveServer(create_app(settings)) as server:
        yield server.url, settings
    drop(settings)


def _closed(sock: socket.socket) -> bool:
    try:
        sock.settimeout(0)
        return sock.recv(4096, socket.MSG_PEEK) == b"" or _drain_closed(sock)
    except BlockingIOError:
        return False
    except OSError:
        return True


def _drain_closed(sock: socket.socket) -> bool:
    # A 408 answer precedes the close: read it, then see whether the end follows.
    try:
        data = sock.recv(65536)
        return data == b"" or (data.startswith(b"HTTP/1.1 408") and sock.recv(65536) == b"")
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.mark.parametrize(
    "opening",
    [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n", b"GE", b"PUT /model/m/v1 HTTP/1.1\r\nHost: x\r\nContent-Le"],
    ids=["nothing", "half a head", "two bytes", "cut inside a header"],
)
def test_idle_and_incomplete_connections_are_closed(quick, opening):
    url, _ = quick
    sockets = [socket.create_connection(_address(url)) for _ in range(50)]
    for sock in sockets:
        if opening:
            sock.sendall(opening)
    started = time.monotonic()
    deadline = started + 1 + 3  # the configured second, plus slack for the checks
    open_ = list(sockets)
    while open_ and time.monotonic() < deadline:
        open_ = [s for s in open_ if not _closed(s)]
        time.sleep(0.1)
    print(f"\nmeasured: 50 connections ({opening!r:.20}) closed {time.monotonic() - started:.1f} s after opening")
    for sock in sockets:
        sock.close()
    assert open_ == [], f"{len(open_)} of 50 still open"


def test_a_silent_upload_is_dropped_and_leaves_nothing(quick):
    url, settings = quick
    httpx.post(f"{url}/model", json={"model_name": "m", "model_version": "v1", "meta": {"library": "x"}})
    with socket.create_connection(_address(url)) as sock:
        sock.sendall(b"PUT /model/m/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        started = time.monotonic()
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
        assert time.monotonic() - started < 4
    assert httpx.get(f"{url}/model/meta", params={"model_name": "m", "model_version": "v1"}).json()["size"] is None
    with MongoClient(settings.mongodb_url) as mongo:  # the partial file's chunks were removed
        deadline = time.monotonic() + 5
        while mongo[settings.gridfs_db_name]["fs.chunks"].count_documents({}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert mongo[settings.gridfs_db_name]["fs.chunks"].count_documents({}) == 0


def test_a_slow_upload_that_keeps_sending_is_not_cut(quick):
    url, _ = quick
    httpx.post(f"{url}/model", json={"model_name": "m", "model_version": "v1", "meta": {"library": "x"}})
    parts = [b"p" * 1000] * 8

    def slowly() -> Iterator[bytes]:
        for part in parts:
            time.sleep(0.4)  # 3.2 s in all, each pause under the 1 s idle limit
            yield part

    r = httpx.put(f"{url}/model/m/v1", content=slowly(), headers={"Content-Length": str(8000)}, timeout=30)
    assert r.status_code == 204, r.text
    assert httpx.get(f"{url}/model/m/v1").content == b"".join(parts)


def test_keep_alive_connections_still_serve_several_requests(quick):
    url, _ = quick
    with httpx.Client(base_url=url) as client:
        for _ in range(3):
            assert client.get("/health").status_code == 200
            time.sleep(0.3)


def test_connection_defaults_are_bounded():
    defaults = Settings()
    assert defaults.header_timeout_s <= 30 and defaults.idle_timeout_s <= 30
    assert defaults.max_header_bytes <= 64 * 1024 and defaults.max_headers <= 200


@pytest.mark.parametrize("public", [False, True])
def test_metrics_need_a_reader_key_unless_public(mongo_url, tmp_path, public):
    keys = tmp_path / "keys.yaml"
    reader, entry = new_key("scraper", Role.READER)
    keys.write_text(f"- {{id: {entry['id']}, role: {entry['role']}, sha256: {entry['sha256']}}}\n")
    settings = make_settings(mongo_url, api_keys_file=keys, metrics_public=public)
    with LiveServer(create_app(settings)) as server:
        anonymous = httpx.get(f"{server.url}/metrics")
        with_key = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {reader}"})
    assert with_key.status_code == 200 and "flrepo_http_requests" in with_key.text
    assert anonymous.status_code == (200 if public else 401)


def test_text_logs_cannot_be_forged(caplog):
    formatter = TextFormatter()
    crafted = "/model/x\n2030-01-01 00:00:00,000 INFO flrepo.access: GET /admin 200\r\x1b[2K\u202e"
    record = logging.LogRecord("flrepo.access", logging.INFO, __file__, 1, "%s %s %s", ("GET", crafted, 404), None)
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u202e" not in line
    assert "\\n2030-01-01" in line
    try:
        raise ValueError("bad\nINFO forged line")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = formatter.format(record).splitlines()
    assert lines[0].endswith("x: failed") and all(line.startswith("  | ") for line in lines[1:])


def test_a_crafted_path_cannot_forge_a_text_log_line(settings, tmp_path):
    """The reproduction: with FLREPO_LOG_FORMAT=text, a path holding a newline wrote a second line."""
    env = {
        "FLREPO_DB_NAME": settings.db_name,
        "FLREPO_GRIDFS_DB_NAME": settings.gridfs_db_name,
        "FLREPO_LOG_FORMAT": "text",
        "FLREPO_LOG_LEVEL": "INFO",
    }
    forged = "2030-01-01 00:00:00,000 INFO flrepo.access: GET /admin/secret 200"
    with api_server(tmp_path, settings.mongodb_url, **env) as (url, _):
        for crafted in (f"/model/x%0A{forged}", f"/model/x%0D%0A{forged}", "/model/%E2%80%AEtxt.exe/v1"):
            httpx.get(url + crafted.replace(" ", "%20"))
        httpx.get(f"{url}/health")  # the last line: once it is in the log, so are the others
        log = tmp_path / "server.log"
        wait_for(lambda: "GET /health" in log.read_text(errors="replace"), 60, "the access line of /health")
    lines = log.read_text().splitlines()
    assert any("flrepo.access" in line and "\\n2030-01-01" in line for line in lines)
    assert not any(line.startswith("2030-01-01") for line in lines)
    assert not any("\u202e" in line or "\r" in line for line in lines)
