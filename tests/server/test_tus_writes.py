"""A resumable upload's part against a store that freezes mid-part: written through the same guard as
a PUT's body (tests/server/test_chunk_writes.py), so a store slow for longer than the per-operation
timeout is waited for and the part lands whole."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import signal
import threading

import httpx

from flrepo.server.embedded import EmbeddedMongo
from flrepo.server.main import create_app
from tests.helpers import LiveServer, make_settings
from tests.server.test_chunk_writes import BODY, MIB, _body

TUS = {"Tus-Resumable": "1.0.0"}


def test_a_tus_part_waits_for_a_store_that_froze_under_it(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="flrepo")
    server = EmbeddedMongo(tmp_path / "data", log_file=tmp_path / "ferretdb.log").start()
    assert server.process is not None
    pid = server.process.pid
    settings = make_settings(server.url, db_timeout_ms=1000, db_read_retry_s=60)
    data = os.urandom(24 * MIB)
    thaw: list[threading.Timer] = []
    try:
        with LiveServer(create_app(settings)) as live, httpx.Client(base_url=live.url, timeout=180) as client:
            assert client.post("/model", json=BODY).status_code == 201
            target = base64.b64encode(b"/model/m/v").decode()
            created = client.post(
                "/uploads", headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": f"target {target}"}
            )
            assert created.status_code == 201, created.text
            digest = "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()
            headers = {
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
                "Upload-Checksum": digest,
            }
            part = client.patch(
                created.headers["location"], content=_body(data, pid, 8 * MIB, 4.0, thaw), headers=headers
            )
            assert thaw, "the store was never frozen"
            thaw[0].cancel()
            os.kill(pid, signal.SIGCONT)
            assert part.status_code == 204, part.text
            assert client.get("/model/m/v").content == data
    finally:
        for timer in thaw:
            timer.cancel()
        os.kill(pid, signal.SIGCONT)
        server.stop()
    assert "retrying" in caplog.text or "still waiting" in caplog.text
