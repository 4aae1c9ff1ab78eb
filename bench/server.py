"""A flrepo API process on an embedded FerretDB, for benchmarks and load tests (loopback only)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.devdb import EmbeddedMongo, free_port


def wait_ready(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base} did not become ready")


@contextmanager
def api_server(
    workdir: Path, mongo_url: str | None = None, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield (base URL, process) of `flrepo serve` on a free port; its own FerretDB unless given a URL."""
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
        **env,
    }
    with open(workdir / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if mongo:
            mongo.stop()
