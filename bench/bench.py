"""flrepo benchmarks: ratios measured side by side, in one run, on one machine and database.

1. File throughput: upload/download through the API vs. the same bytes with AsyncGridFSBucket.
2. Memory: the API process's peak RSS over idle while a large file goes up and comes back.
3. Metadata: GET /model/meta and GET /model?limit=100 vs. a minimal FastAPI app with the same
   driver calls, at concurrency 1, 16 and 64 (wrk when installed, else an httpx load process).
4. Federated round overhead: needs the training collector (reported as not run until it exists).

Usage: python bench/bench.py --mode quick|full [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import MODES
from bench.federated import federated
from bench.files import memory, throughput
from bench.metadata import metadata, seed_models, wait_ready_minimal
from bench.report import publish, report, versions
from flrepo.server.embedded import EmbeddedMongo, api_server, free_port, reap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--out", type=Path, default=None, help="append the report to this Markdown file")
    parser.add_argument(
        "--files-json",
        type=Path,
        help="skip sections 1-2 and report these figures instead (the JSON a previous run printed as 'bench: files')",
    )
    args = parser.parse_args()
    cfg = MODES[args.mode]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with EmbeddedMongo(tmp / "db", log_file=tmp / "ferretdb.log") as mongo:
            db = "bench"
            env = {"FLREPO_DB_NAME": db, "FLREPO_GRIDFS_DB_NAME": f"{db}_grid", "FLREPO_LOG_LEVEL": "ERROR"}
            with api_server(tmp, mongo.url, **env) as (api, proc):
                info = versions(mongo.url)
                print(f"bench: {args.mode} mode on {info['database']}", flush=True)
                if args.files_json:
                    files = json.loads(args.files_json.read_text())
                else:
                    files = {
                        "tp": asyncio.run(throughput(mongo.url, db, api, cfg["sizes"], cfg["ballast"])),
                        "mem": asyncio.run(memory(api, proc.pid, cfg["memory"])),
                    }
                    print(f"bench: files {json.dumps(files)}", flush=True)
                tp, mem = files["tp"], files["mem"]
                asyncio.run(seed_models(mongo.url, db, cfg["models"]))
                port = free_port()
                minimal = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "bench.minimal_app:app",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ],
                    env={**os.environ, "FLREPO_MONGODB_URL": mongo.url, "FLREPO_DB_NAME": db},
                    cwd=Path(__file__).resolve().parent.parent,
                )
                try:
                    wait_ready_minimal(f"http://127.0.0.1:{port}")
                    meta = metadata(api, f"http://127.0.0.1:{port}", cfg["models"], cfg["seconds"], cfg["levels"], tmp)
                finally:
                    reap([minimal], terminate=True)
            fed = federated(mongo.url, tmp, 5, 3, cfg["fl_repeats"])
            print(f"bench: federated {fed}", flush=True)
    text = report(args.mode, info, tp, mem, meta, fed)
    return publish(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
