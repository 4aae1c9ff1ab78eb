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
import time
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


def _serve_aeros(work: Path, mongo_url: str, source: Path, python: str) -> tuple[subprocess.Popen[bytes], str]:
    """aerOS FL Repository 1.1.0 itself (a checkout of assist-iot/fl_repository at `source`, its pinned
    packages in `python`) on the same kind of store, for comparison."""
    port = _port()
    host, db_port = mongo_url.removeprefix("mongodb://").rstrip("/").rsplit(":", 1)
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "SERVER_PORT": str(port)}
    env |= {"DB_ADDRESS": host, "DB_PORT": db_port}
    with open(work / "aeros.log", "ab") as log:
        proc = subprocess.Popen(
            [python, "-m", "uvicorn", "application.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=source,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/model", timeout=2):
                return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"aerOS did not start: {(work / 'aeros.log').read_text()[-2000:]}") from None
            time.sleep(0.2)


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, list[str]]:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("PASS ", "FAIL ", "SKIP "))]
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
    parser.add_argument("--aeros", type=Path, help="run against aerOS 1.1.0 itself: a checkout of assist-iot/fl_repository")
    parser.add_argument("--aeros-python", help="with --aeros: a Python with aerOS's pinned packages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flrepo-compat-") as tmp:
        work = Path(tmp)
        mongo = EmbeddedMongo(work / "db", log_file=work / "ferretdb.log").start()
        if args.aeros:
            server, url = _serve_aeros(work, mongo.url, args.aeros, args.aeros_python or sys.executable)
        else:
            server, url = _serve(work, mongo.url)
        try:
            print(f"{'aerOS 1.1.0' if args.aeros else 'flrepo'} at {url}, store {mongo.url}", flush=True)
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            mongo_host = mongo.url.removeprefix("mongodb://").rstrip("/")
            code, lines = _run([args.python, str(HERE / "calls.py"), url, mongo_host, str(work / "calls")], env, work)
            try:
                with urllib.request.urlopen(f"{url}/training-results/weights/migration_predictor/v1/7?encoding=raw") as r:
                    raw = r.read()
                # aerOS answers base64 whatever is asked; flrepo the file for encoding=raw.
                env["EXPECTED_WEIGHTS_BASE64"] = raw.decode() if args.aeros else base64.b64encode(raw).decode()
            except OSError:
                pass  # the collector's call failed and said so
            env["FL_REPOSITORY_URL"] = url
            node = [args.node, "--import", str(HERE / "fl-api" / "register.mjs"), str(HERE / "fl-api" / "calls.mjs")]
            node_code, node_lines = _run(node, env, HERE / "fl-api")
        finally:
            reap([server], terminate=True)
            mongo.stop()
    passed = sum(line.startswith("PASS") for line in lines + node_lines)
    failed = sum(line.startswith("FAIL") for line in lines + node_lines)
    skipped = sum(line.startswith("SKIP") for line in lines + node_lines)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""), flush=True)
    return 0 if not (code or node_code or failed) else 1


if __name__ == "__main__":
    sys.exit(main())
