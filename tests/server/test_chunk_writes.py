"""File writes against a store that stops answering mid-upload: timeouts bound a dead store, not a slow
one. An upload whose store freezes for a while (longer than the per-operation timeout) and then goes on
completes; one whose store stays frozen past FLREPO_DB_READ_RETRY_S gets a 503 and leaves no file."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

from flrepo.server.embedded import EmbeddedMongo
from flrepo.server.main import create_app
from tests.helpers import LiveServer, make_settings
from tests.server.test_database_down import wait_stopped

MIB = 1024 * 1024
BODY = {"model_name": "m", "model_version": "v", "meta": {"library": "k"}}


def _body(data: bytes, pid: int, freeze_after: int, freeze_s: float, thaw: list[threading.Timer]) -> Iterator[bytes]:
    """`data` in 256 KiB pieces; once `freeze_after` bytes are sent, the store is frozen (SIGSTOP) and a
    timer thaws it `freeze_s` later. The rest is offered meanwhile: the service reads it as it can."""
    for offset in range(0, len(data), 256 * 1024):
        if offset >= freeze_after and not thaw:
            os.kill(pid, signal.SIGSTOP)
            wait_stopped(pid)
            thaw.append(threading.Timer(freeze_s, os.kill, (pid, signal.SIGCONT)))
            thaw[0].start()
        yield data[offset : offset + 256 * 1024]


def _run(tmp_path: Path, freeze_s: float, retry_s: float) -> tuple[bytes, int | str, bytes | None, int]:
    """Upload 24 MiB, freezing the store after 8 MiB for `freeze_s`. Returns (uploaded, the PUT's status
    or the client's error, the file as downloaded afterwards or None, GridFS files stored)."""
    server = EmbeddedMongo(tmp_path / "data", log_file=tmp_path / "ferretdb.log").start()
    assert server.process is not None
    pid = server.process.pid
    settings = make_settings(server.url, db_timeout_ms=1000, db_read_retry_s=retry_s)
    data = os.urandom(24 * MIB)
    thaw: list[threading.Timer] = []
    try:
        with LiveServer(create_app(settings)) as live, httpx.Client(base_url=live.url, timeout=180) as client:
            assert client.post("/model", json=BODY).status_code == 201
            outcome: int | str
            try:
                r = client.put("/model/m/v", content=_body(data, pid, 8 * MIB, freeze_s, thaw))
                outcome = r.status_code
            except httpx.HTTPError as exc:  # the service answered and closed while the body was still coming
                outcome = repr(exc)
            assert thaw, "the store was never frozen"
            thaw[0].cancel()
            os.kill(pid, signal.SIGCONT)
            got = client.get("/model/m/v")
            stored = got.content if got.status_code == 200 else None
            files = client.get("/models/available").json()
    finally:
        for timer in thaw:
            timer.cancel()
        os.kill(pid, signal.SIGCONT)
        server.stop()
    return data, outcome, stored, len(files)


def test_an_upload_waits_for_a_store_that_froze_under_it(tmp_path, caplog):
    """Frozen for 4x the per-operation timeout mid-upload: the write is waited for and retried (the log
    says so), the PUT answers 204 and the file reads back unchanged."""
    caplog.set_level(logging.INFO, logger="flrepo")
    data, outcome, stored, _ = _run(tmp_path, freeze_s=4.0, retry_s=60)
    assert outcome == 204
    assert stored == data
    assert "retrying" in caplog.text or "still waiting" in caplog.text


def test_an_upload_to_a_store_frozen_past_the_budget_gets_503_and_leaves_no_file(tmp_path, caplog):
    """Frozen longer than FLREPO_DB_READ_RETRY_S: the upload is given up (503, or the connection closed
    while the client was still sending), the log says why, and the model has no file."""
    _data, outcome, stored, files = _run(tmp_path, freeze_s=10.0, retry_s=2)
    assert outcome == 503 or isinstance(outcome, str), outcome
    assert stored is None and files == 0
    assert "given up after" in caplog.text
