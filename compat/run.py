"""`make compat`: the aerOS components' repository calls against a live flrepo, one line per call.

Starts an embedded FerretDB and `flrepo serve` on port 9013 (what fl-experiments' upload script names;
another free port when 9013 is taken, and that one call is skipped) with aerOS's database names
(`repository`, `repository_grid`: the orchestrator reads `repository_grid` by name), then runs
calls.py in the components' pinned Python environment and fl-api/calls.mjs under Node. Nothing is
fetched at run time: the components' code is vendored here (README.md), the environments are set up by
the make target. Exit code 0 when every call passed.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from flrepo.server.embedded import EmbeddedMongo, free_port, reap, wait_ready

HERE = Path(__file__).resolve().parent
AEROS_PORT = 9013


def _port() -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", AEROS_PORT))
        except OSError:
            return free_port()
    return AEROS_PORT


def _serve(work: Path, mongo_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    env = {
        **os.environ,
        "FLREPO_MONGODB_URL": mongo_url,
        "FLREPO_DB_NAME": "repository",
        "FLREPO_GRIDFS_DB_NAME": "repository_grid",
        "FLREPO_LOG_LEVEL": "WARNING",
        "FLREPO_DB_TIMEOUT_MS": "10000",
    }
    with open(work / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flrepo.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return proc, url


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, list[str]]:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("PASS ", "FAIL "))]
    for line in lines:
        print(line, flush=True)
    if done.returncode and not any(line.startswith("FAIL") for line in lines):
        print(f"FAIL {cmd[0]}: exited {done.returncode}\n{done.stderr[-2000:]}", flush=True)
    elif done.returncode:
        sys.stderr.write(done.stderr[-4000:])
    return done.returncode, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the components' pinned Python environment")
    parser.add_argument("--node", default="node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flrepo-compat-") as tmp:
        work = Path(tmp)
        mongo = EmbeddedMongo(work / "db", log_file=work / "ferretdb.log").start()
        server, url = _serve(work, mongo.url)
        try:
            print(f"flrepo at {url}, store {mongo.url}", flush=True)
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            mongo_host = mongo.url.removeprefix("mongodb://").rstrip("/")
            code, lines = _run([args.python, str(HERE / "calls.py"), url, mongo_host, str(work / "calls")], env, work)
            with urllib.request.urlopen(f"{url}/training-results/weights/migration_predictor/v1/7?encoding=raw") as r:
                env["EXPECTED_WEIGHTS_BASE64"] = base64.b64encode(r.read()).decode()
            env["FL_REPOSITORY_URL"] = url
            node = [args.node, "--import", str(HERE / "fl-api" / "register.mjs"), str(HERE / "fl-api" / "calls.mjs")]
            node_code, node_lines = _run(node, env, HERE / "fl-api")
        finally:
            reap([server], terminate=True)
            mongo.stop()
    passed = sum(line.startswith("PASS") for line in lines + node_lines)
    failed = sum(line.startswith("FAIL") for line in lines + node_lines)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if not (code or node_code or failed) else 1


if __name__ == "__main__":
    sys.exit(main())
