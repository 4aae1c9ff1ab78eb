"""Status-report latency and task-document size over many reports (issue 28), against `flrepo serve` on
an embedded FerretDB: a collector claims a task and sends N reports, each with a reason and a 2,000-character
message (a condition each, before conditions were coalesced) and a round record. Prints, per block of
reports, the median latency and the task document's size (BSON), the ratio of the last block's median
to the first's, and the CPU each report cost the store and the API server (their processes' time over
the run: on one machine, what a report takes from the cores the rounds need, #20). With `--checkpoints N`,
then N checkpoints of the reported rounds, as a collector's round writes make them (a 3 KB .npz uploaded
with its registration; `--checkpoint-requests 2`: registered first): their median latency and the CPU
each cost the store and the API server. `--shown`: the round records a report's answer carries.
Usage: python bench/task_reports.py [--reports 1000] [--block 100] [--history 1000] [--checkpoints 0]
       [--checkpoint-requests 1|2] [--shown 0]"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bson
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import cpu_seconds
from flrepo.client import Keyring, RepositoryClient
from flrepo.server.embedded import EmbeddedMongo, api_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--history", type=int, default=1000, help="FLREPO_TASK_HISTORY_ROUNDS")
    parser.add_argument("--checkpoints", type=int, default=0, help="checkpoints after the reports (<= --reports)")
    parser.add_argument(
        "--checkpoint-requests", type=int, choices=(1, 2), default=1, help="1: registered by the upload; 2: POST, PUT"
    )
    parser.add_argument(
        "--shown", type=int, default=0, help="round records in a report's answer (a collector: 0; default 100)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mongo = EmbeddedMongo(Path(tmp) / "db", log_file=Path(tmp) / "ferretdb.log").start()
        try:
            env = {"FLREPO_TASK_HISTORY_ROUNDS": str(args.history), "FLREPO_DB_NAME": "bench"}
            with api_server(Path(tmp), mongo.url, **env) as (url, server), MongoClient(mongo.url) as raw:
                pids = {"store": mongo.process.pid if mongo.process else None, "API server": server.pid}
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                token = run(url, raw["bench"]["tasks"], args.reports, args.block, args.shown)
                spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
                each = ", ".join(f"{name} {1000 * s / args.reports:.1f} ms CPU" for name, s in spent.items())
                print(f"{each} per report")
                if args.checkpoints:
                    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    checkpoints(url, token, min(args.checkpoints, args.reports), args.checkpoint_requests)
                    spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
                    each = ", ".join(f"{name} {1000 * s / args.checkpoints:.1f} ms CPU" for name, s in spent.items())
                    print(f"{each} per checkpoint (registered and uploaded)")
        finally:
            mongo.stop()


def run(url: str, tasks: object, reports: int, block: int, shown: int = 0) -> str:
    """The reports; the task token they were sent with."""
    with RepositoryClient(url, keyring=Keyring()) as repo:
        repo.create_model("bench", "v1", library="numpy")
        repo.create_strategy("fedavg")
        repo.upload("/strategy/fedavg", io.BytesIO(b"not loaded by this benchmark"))
        repo.create_task(
            {
                "task_id": "t",
                "model": {"model_name": "bench", "model_version": "v1"},
                "strategy": {"strategy_name": "fedavg"},
                "rounds": 10_000,
            }
        )
        repo.task_token = repo.claim_task("t", collector="bench").token
        repo.update_task_status("t", phase="Running")
        first = None
        print(f"{'reports':>8} {'median ms':>10} {'p95 ms':>8} {'task KB':>8}")
        for start in range(0, reports, block):
            times = []
            for n in range(start + 1, min(start + block, reports) + 1):
                began = time.perf_counter()
                repo.update_task_status(
                    "t",
                    history=shown,
                    reason="Progress",
                    message="m" * 2000,
                    current_round=n,
                    round={"round": n, "loss": 0.5, "metrics": {"acc": 0.9}},
                )
                times.append((time.perf_counter() - began) * 1000)
            size = len(bson.encode(tasks.find_one({"task_id": "t"})))  # type: ignore[attr-defined]
            median = statistics.median(times)
            first = first or median
            p95 = statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]
            print(f"{start + len(times):>8} {median:>10.1f} {p95:>8.1f} {size / 1024:>8.0f}")
        print(f"last block's median / first block's: {median / first:.2f}")
        return str(repo.task_token)


def checkpoints(url: str, token: str, count: int, requests: int = 1) -> None:
    """`count` checkpoints of task t's reported rounds, as a collector writes them (flrepo.fl.core.link)."""
    import numpy as np

    from flrepo.fl.weights import to_npz

    data = to_npz([np.zeros((64, 10), dtype=np.float32), np.zeros(10, dtype=np.float32)])  # the digits model
    times = []
    with RepositoryClient(url, keyring=Keyring()) as repo:
        repo.task_token = token
        for n in range(1, count + 1):
            began = time.perf_counter()
            if requests == 2:
                repo.create_checkpoint("t", n, loss=1.0 / n, metrics={"acc": 0.9})
            one = {"register": True, "loss": 1.0 / n, "metrics": {"acc": 0.9}} if requests == 1 else {}
            repo.upload_checkpoint("t", n, io.BytesIO(data), filename=f"round-{n}.npz", **one)
            times.append((time.perf_counter() - began) * 1000)
    how = "registered by the upload" if requests == 1 else "registered, then uploaded"
    print(f"checkpoints: {count}, median {statistics.median(times):.1f} ms ({how}, {len(data)} bytes)")


if __name__ == "__main__":
    main()
