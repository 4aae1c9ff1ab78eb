"""The CLI's uploads go through tus from FLREPO_TUS_THRESHOLD_BYTES on, through its entry point."""

from __future__ import annotations

import hashlib
import json
import os

from flrepo.cli.exit_codes import OK
from flrepo.cli.main import main


def test_an_upload_above_the_threshold_is_a_resumable_one(live_server, raw_db, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLREPO_TUS_THRESHOLD_BYTES", str(1024 * 1024))
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    base = ["--url", live_server.url, "--output", "json"]
    assert main(["models", "create", "m", "v1", "--library", "numpy", *base]) == OK
    capsys.readouterr()
    assert main(["models", "upload", "m", "v1", str(source), *base]) == OK
    assert json.loads(capsys.readouterr().out)["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    uploads = list(raw_db[0]["uploads"].find({}))
    assert len(uploads) == 1 and uploads[0]["completed_at"] is not None
    assert uploads[0]["target"] == "/model/m/v1" and uploads[0]["filename"] == "model.bin"
