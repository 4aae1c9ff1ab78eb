"""What the commands log: no line per HTTP request (httpx logs each at INFO) unless asked for DEBUG."""

from __future__ import annotations

import os
import subprocess
import sys

from flrepo.cli.exit_codes import NOT_FOUND, OK


def _flrepo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "FLREPO_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "flrepo.cli", *args], capture_output=True, text=True, env={**environ, **env}
    )


def test_fl_commands_do_not_log_every_request(live_server):
    done = _flrepo("collector", "--task", "nope", "--repo", live_server.url)
    assert done.returncode == NOT_FOUND
    assert "HTTP Request" not in done.stderr and "flrepo collector:" in done.stderr


def test_collection_commands_at_info_do_not_log_every_request(live_server):
    done = _flrepo("models", "list", "--url", live_server.url, "-O", "json", FLREPO_LOG_LEVEL="INFO")
    assert done.returncode == OK and done.stderr == ""


def test_debug_shows_the_requests(live_server):
    done = _flrepo("models", "list", "--url", live_server.url, "-O", "json", FLREPO_LOG_LEVEL="DEBUG")
    assert done.returncode == OK and "HTTP Request: GET" in done.stderr
