"""An embedded MongoDB wire-protocol server for development and tests: FerretDB on SQLite.

The binary is built by `tools/ferretdb/build.sh` (a Go program embedding FerretDB v1.24.2 with a
small pushdown patch); see DESIGN.md §3 and tools/ferretdb/README.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]  # the checkout: app/flrepo/server/embedded.py
TOOL_DIR = ROOT / "tools" / "ferretdb"
BINARY = ROOT / "tools" / "bin" / "ferretdb"
# The one build procedure (the Makefile runs it too) and what it builds from: the binary is
# rebuilt when any of these is newer, as `make ferretdb` would.
BUILD_SCRIPT = TOOL_DIR / "build.sh"
BUILD_INPUTS = ("main.go", "go.mod", "go.sum", "build.sh", "pushdown.patch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ferretdb_binary(allow_build: bool = True) -> Path:
    """Path of the FerretDB binary, building it with `tools/ferretdb/build.sh` when missing or stale."""
    override = os.environ.get("FLREPO_FERRETDB_BIN")
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"FLREPO_FERRETDB_BIN={override}: no such file")
        return Path(override)
    if BINARY.exists() and not _stale(BINARY):
        return BINARY
    if not allow_build:
        if BINARY.exists():
            log.warning("%s is older than its sources in %s; run `make ferretdb`", BINARY, TOOL_DIR)
            return BINARY
        raise FileNotFoundError(f"{BINARY} is missing; run `make ferretdb`")
    if not BUILD_SCRIPT.exists():
        raise FileNotFoundError(
            "the embedded store is built from a checkout of flrepo (tools/ferretdb); from an installed "
            "package, set FLREPO_FERRETDB_BIN to a FerretDB binary or FLREPO_MONGODB_URL to a MongoDB"
        )
    if shutil.which("go") is None:
        raise FileNotFoundError(f"{BINARY} needs building and Go is not installed to build it")
    log.info("building FerretDB into %s with %s", BINARY, BUILD_SCRIPT)
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    return BINARY


def _stale(binary: Path) -> bool:
    built = binary.stat().st_mtime
    return any((TOOL_DIR / name).stat().st_mtime > built for name in BUILD_INPUTS if (TOOL_DIR / name).exists())


def _die_with_parent() -> None:
    """Runs in the child before exec: have Linux send it SIGTERM when its parent dies.

    `flrepo serve --embedded` ends by re-raising SIGTERM (uvicorn does), which skips `finally`
    blocks; without this the database process would outlive the API.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedMongo:
    """A FerretDB process listening on 127.0.0.1; `url` is its MongoDB connection string."""

    def __init__(self, data_dir: Path, port: int | None = None, log_file: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.log_file = log_file or self.data_dir.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> EmbeddedMongo:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = ferretdb_binary()
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(
                [str(binary), "-listen", f"127.0.0.1:{self.port}", "-dir", str(self.data_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"FerretDB exited with {self.process.returncode}; see {self.log_file}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"FerretDB did not listen on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedMongo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def reap(processes: list[subprocess.Popen[bytes]], timeout: float = 10, terminate: bool = False) -> None:
    """Wait for each process (after SIGTERM when `terminate`), killing any that outlives `timeout`."""
    for proc in processes:
        if terminate and proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# A process's imports alone can take a minute on a busy machine; a server that exits says so at once.
READY_TIMEOUT_S = 180.0


def wait_ready(base: str, timeout: float = READY_TIMEOUT_S, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until `base` answers /ready; RuntimeError after `timeout` s, or as soon as `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server for {base} exited ({proc.returncode}) before it was ready")
        try:
            if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base} did not become ready in {timeout:.0f} s")


@contextmanager
def api_server(
    workdir: Path, mongo_url: str | None = None, *, ready_timeout: float = READY_TIMEOUT_S, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield (base URL, process) of `flrepo serve` on a free port; its own FerretDB unless given a URL.
    It is waited for up to `ready_timeout` seconds (a loaded machine may need minutes)."""
    mongo = None
    if mongo_url is None:
        mongo = EmbeddedMongo(workdir / "db", log_file=workdir / "ferretdb.log").start()
        mongo_url = mongo.url
    port = free_port()
    environment = {
        **os.environ,
        "FLREPO_MONGODB_URL": mongo_url,
        "FLREPO_LOG_LEVEL": "WARNING",
        "FLREPO_SWEEP_INTERVAL_S": "0",
        # The embedded store can take seconds for one large write on a busy machine (as `serve --embedded`).
        "FLREPO_DB_TIMEOUT_MS": "10000",
        **env,
    }
    with open(workdir / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flrepo.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, ready_timeout, proc=proc)
        yield base, proc
    finally:
        reap([proc], terminate=True)
        if mongo:
            mongo.stop()
