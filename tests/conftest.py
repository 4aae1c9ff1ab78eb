"""Fixtures: a real MongoDB wire-protocol server, a fresh database per test, the app over HTTP.

The server is chosen in this order: FLREPO_TEST_MONGODB_URL; a `mongod` on PATH; else FerretDB
(SQLite backend) built from tools/ferretdb.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from pymongo import MongoClient

from flrepo.server.embedded import EmbeddedMongo, free_port
from flrepo.server.main import create_app
from flrepo.server.settings import Settings
from tests.helpers import DOCUMENTED, Catalogue, FlSite, LiveServer, drop, make_settings

# Run in the background by a script (`make test-stress ... &`), this process inherits SIGINT ignored, and
# so would every process the tests start: a test of Ctrl-C models a terminal, where SIGINT is not.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


_documented: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collects the docs test's counts from its reports: here (the controller, under pytest-xdist) they
    arrive from every worker."""
    if report.when == "call":
        _documented.extend(str(value) for key, value in report.user_properties if key == DOCUMENTED)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _documented:
        terminalreporter.write_sep("-", DOCUMENTED)
        for line in sorted(_documented):
            terminalreporter.write_line(line)


@pytest.hookimpl(optionalhook=True)  # a run without xdist (`-p no:xdist`) has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`make test` runs under pytest-xdist: each test goes to whichever worker is free, but the SDK tests all go
    to one worker with the check that runs after them (tests/client/test_sdk_coverage.py reads what the tests of
    its own process called; it fails if they were split). xdist's `--dist loadgroup` would do this, but it marks
    its groups through `Item._nodeid`, which pytest 9 no longer reads: pytest-xdist is pinned in pyproject.toml."""
    from xdist.scheduler import LoadScopeScheduling

    from tests.client.sdk import SDK_MODULES

    together = {"tests/client/test_sdk_coverage.py"} | {name.replace(".", "/") + ".py" for name in SDK_MODULES}

    class SdkTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "sdk" if path in together else nodeid

    return SdkTestsTogether(config, log)  # type: ignore[arg-type]


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


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings)) as server:
        yield server


@pytest.fixture
def raw_db(settings: Settings) -> Iterator[tuple[object, object]]:
    """Synchronous handles on the test's metadata and GridFS databases, for checking storage."""
    with MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=2000) as c:
        yield c[settings.db_name], c[settings.gridfs_db_name]


@pytest.fixture(scope="session")
def catalogue(mongo_url: str) -> Iterator[Catalogue]:
    """The signed catalogue, seeded through the API once per run into a database of its own; tests copy it
    into their fresh database (a seed per test was ~57 requests and signatures: seconds of every FL
    test's setup, half a minute on a busy machine). tests/fl/test_catalogue.py seeds for real."""
    from flrepo.client import RepositoryClient
    from flrepo.fl.catalogue import seed
    from flrepo.fl.demo import publisher

    template = make_settings(mongo_url)
    keyring, trusted = publisher("test")
    with LiveServer(create_app(template)) as server, RepositoryClient(server.url, keyring=keyring) as repo:
        seed(repo)
    yield Catalogue(template, keyring, trusted)
    drop(template)


@pytest.fixture
def fl(settings: Settings, tmp_path, catalogue: Catalogue) -> Iterator[FlSite]:
    """An API server on this test's database with the signed catalogue (copied from `catalogue`). It serves
    from a thread of this process (the FL processes reach it over loopback all the same): a `flrepo serve`
    process per test spent its setup importing the server again, half a minute of it on a busy machine."""
    from flrepo.client import RepositoryClient
    from flrepo.fl.demo import fl_env

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    keyring = catalogue.copy_to(settings)
    with LiveServer(create_app(settings)) as server:
        with RepositoryClient(server.url, keyring=keyring) as repo:
            # The public key only: collectors and local executions verify, they cannot sign.
            yield FlSite(repo, server.url, fl_env(server.url, catalogue.trusted), tmp_path)
