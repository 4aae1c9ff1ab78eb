"""The tus-js-client (npm, unchanged) uploads to /uploads, is interrupted after its first part and
resumes from its upload URL; the stored file is the one sent. `make tusjs` installs the client into
tools/tusjs (CI does); without node or it, the test is skipped and says why."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "tools" / "tusjs"
SCRIPT = ROOT / "tests" / "data" / "tusjs" / "resume.js"


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None or not (CLIENT / "node_modules" / "tus-js-client").is_dir():
        pytest.skip("needs node and tus-js-client: make tusjs")
    return found


def test_tus_js_client_uploads_and_resumes(node, live_server, tmp_path):
    data = os.urandom(12 * 1024 * 1024 + 123)
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    with httpx.Client(base_url=live_server.url) as http:
        created = http.post("/model", json={"model_name": "js", "model_version": "v1", "meta": {"library": "numpy"}})
        assert created.status_code == 201
        env = {**os.environ, "NODE_PATH": str(CLIENT / "node_modules")}
        run = subprocess.run(
            [node, str(SCRIPT), live_server.url, str(source), "/model/js/v1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        lines = run.stdout.split()
        assert lines[0] == "interrupted" and "/uploads/" in lines[1] and lines[-1] == "done", run.stdout
        head = http.head("/model/js/v1")
        assert head.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert int(head.headers["content-length"]) == len(data)
