"""Property-based API fuzzing, two runs with one seed:

1. schemathesis against the service's own OpenAPI document: starts the API on an embedded FerretDB,
   checks zero 5xx and responses conforming to the documented status codes, content types and schemas;
2. the hostile-shapes run (tests/server/test_hostile_properties.py, hypothesis): for every operation,
   what the schemas do not describe (huge numbers, lone surrogates, NaN/Infinity, control and format
   characters, deep nesting, huge Range positions) on the real wire server; zero 5xx, no dropped connection.

Prints the seed, the case counts and the statuses. Usage: python tools/fuzz.py [--examples N] [--seed S]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flrepo.server.embedded import EmbeddedMongo, free_port
from flrepo.server.repository.task_ends import MAX_WAIT_SECONDS

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=25, help="max examples per operation and phase")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**31)

    with tempfile.TemporaryDirectory() as tmp, EmbeddedMongo(Path(tmp) / "db") as mongo:
        port = free_port()
        env = {**os.environ, "FLREPO_MONGODB_URL": mongo.url, "FLREPO_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen(
            [sys.executable, "-m", "flrepo.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "server.log", "wb"),
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    print("fuzz: the API did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            command = [
                # As a module of this interpreter: the schemathesis script may live in another venv.
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{base}/openapi.json",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                str(args.examples),
                "--seed",
                str(seed),
                # One worker: with two, Hypothesis describes lambdas in two threads at once, and CPython
                # 3.11's `ast` (interpreter-wide recursion counter) then fails with "SystemError: AST
                # constructor recursion depth mismatch", reported as a flaky Runtime Error. A run takes
                # as long either way on two cores.
                "--workers",
                "1",
                "--no-color",
                # A held `GET /tasks/{id}?wait_end=` answers after up to MAX_WAIT_SECONDS by design:
                # schemathesis's default 10 s read timeout reported that as a network error.
                "--request-timeout",
                str(MAX_WAIT_SECONDS + 20),
            ]
            print(f"fuzz: seed={seed} examples={args.examples}: {' '.join(command)}", flush=True)
            hooks = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks", "PYTHONPATH": str(Path(__file__).parent)}
            result = subprocess.run(command, env=hooks, capture_output=True, text=True, check=False)
            print(result.stdout[-20000:])
            print(result.stderr[-5000:], file=sys.stderr)
            cases = re.search(r"(\d+) generated", result.stdout)
            print(f"fuzz: seed={seed} cases={cases.group(1) if cases else '?'} exit={result.returncode}")
            if server.poll() is not None:
                print("fuzz: the API process died during the run", file=sys.stderr)
                return 1
        finally:
            server.terminate()
            server.wait(10)
        hostile = hostile_shapes(Path(tmp), seed, args.examples * 4)
    return result.returncode or hostile


def hostile_shapes(tmp: Path, seed: int, examples: int) -> int:
    """Run the hostile-shapes property test; print how many requests it sent and what they got."""
    report = tmp / "hostile.jsonl"
    env = {
        **os.environ,
        "FLREPO_HOSTILE_EXAMPLES": str(examples),
        "FLREPO_HOSTILE_SEED": str(seed),
        "FLREPO_HOSTILE_REPORT": str(report),
    }
    root = Path(__file__).resolve().parent.parent
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/server/test_hostile_properties.py",
    ]
    print(f"fuzz: hostile shapes seed={seed} examples={examples}: {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    print(result.stdout[-5000:])
    statuses: collections.Counter[int] = collections.Counter()
    operations = 0
    if report.exists():
        for line in report.read_text().splitlines():
            operations += 1
            statuses.update({int(code): n for code, n in json.loads(line)["statuses"].items()})
    server_errors = sum(n for code, n in statuses.items() if code >= 500)
    shown = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    print(
        f"fuzz: hostile shapes seed={seed} operations={operations} requests={sum(statuses.values())} "
        f"5xx={server_errors} exit={result.returncode} ({shown})"
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
