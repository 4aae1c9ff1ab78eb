"""Bounded load test on loopback with nothing lost.

N concurrent clients for D seconds run a mix of creates, uploads (1-5 MiB), downloads (each
verified), lists and deletes against a real API process; at the end every surviving file is
downloaded and compared with the sha256 of what was uploaded. Fails (exit 1) on any 5xx, any
unexpected status, or any lost or corrupted file.

Usage: python bench/loadtest.py [--clients 16] [--seconds 60] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flrepo.server.embedded import api_server

log = logging.getLogger("loadtest")
MIB = 1024 * 1024


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)

    def record(self, op: str, seconds: float, status: int) -> None:
        self.latencies.setdefault(op, []).append(seconds)
        self.statuses[status] += 1

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


async def timed(stats: Stats, op: str, expected: set[int], call) -> httpx.Response:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    response: httpx.Response = await call
    stats.record(op, time.perf_counter() - started, response.status_code)
    if response.status_code not in expected:
        stats.unexpected.append(f"{op} -> {response.status_code} {response.text[:200]}")
    return response


async def client_loop(n: int, base: str, deadline: float, stats: Stats, rng: random.Random, uploaded: dict) -> None:  # type: ignore[type-arg]
    mine: list[str] = []
    counter = 0
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        while time.monotonic() < deadline:
            roll = rng.random()
            if not mine or roll < 0.15:
                counter += 1
                name = f"c{n}-m{counter}"
                body = {"model_name": name, "model_version": "v1", "meta": {"library": "numpy"}}
                await timed(stats, "create", {201}, http.post("/model", json=body))
                mine.append(name)
            elif roll < 0.45:
                name = rng.choice(mine)
                data = rng.randbytes(rng.randint(1 * MIB, 5 * MIB))
                r = await timed(
                    stats,
                    "upload",
                    {204},
                    http.put(f"/model/{name}/v1", content=data, headers={"content-type": "application/octet-stream"}),
                )
                if r.status_code == 204:
                    uploaded[name] = hashlib.sha256(data).hexdigest()
            elif roll < 0.75:
                name = rng.choice(mine)
                r = await timed(stats, "download", {200, 404}, http.get(f"/model/{name}/v1"))
                if r.status_code == 200 and hashlib.sha256(r.content).hexdigest() != uploaded.get(name):
                    stats.corrupted.append(f"{name}: downloaded bytes differ from the last upload")
            elif roll < 0.9:
                await timed(stats, "list", {200}, http.get("/model", params={"limit": 100}))
            else:
                name = mine.pop(rng.randrange(len(mine)))
                await timed(stats, "delete", {204}, http.delete(f"/model/{name}/v1"))
                uploaded.pop(name, None)


async def verify(base: str, uploaded: dict[str, str], stats: Stats) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        for name, digest in uploaded.items():
            r = await http.get(f"/model/{name}/v1")
            if r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != digest:
                stats.corrupted.append(f"{name}: lost or corrupted at the end ({r.status_code})")
    return len(uploaded)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(base: str, clients: int, seconds: float, seed: int) -> Stats:
    stats = Stats()
    uploaded: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        *(client_loop(i, base, deadline, stats, random.Random(seed + i), uploaded) for i in range(clients))
    )
    verified = await verify(base, uploaded, stats)
    log.info("verified %d surviving files", verified)
    return stats


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="an already running API (default: start one on an embedded store)")
    args = parser.parse_args()

    started = time.monotonic()
    if args.url:
        stats = asyncio.run(run(args.url, args.clients, args.seconds, args.seed))
    else:
        with tempfile.TemporaryDirectory() as tmp, api_server(Path(tmp)) as (base, _):
            stats = asyncio.run(run(base, args.clients, args.seconds, args.seed))
    elapsed = time.monotonic() - started
    all_latencies = [v for values in stats.latencies.values() for v in values]
    server_errors = sum(count for status, count in stats.statuses.items() if status >= 500)
    print(f"loadtest: {args.clients} clients, {args.seconds:.0f} s, seed {args.seed}, wall {elapsed:.1f} s")
    print(f"requests served: {stats.requests}  ({stats.requests / args.seconds:.1f}/s)")
    print(f"statuses: {dict(sorted(stats.statuses.items()))}")
    print(
        f"latency all: p50 {percentile(all_latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(all_latencies, 0.99) * 1000:.1f} ms"
    )
    for op, values in sorted(stats.latencies.items()):
        print(
            f"  {op:9s} n={len(values):6d} p50 {percentile(values, 0.5) * 1000:8.1f} ms  "
            f"p99 {percentile(values, 0.99) * 1000:8.1f} ms  mean {statistics.fmean(values) * 1000:8.1f} ms"
        )
    print(f"5xx: {server_errors}  unexpected: {len(stats.unexpected)}  lost or corrupted: {len(stats.corrupted)}")
    for line in (stats.unexpected + stats.corrupted)[:20]:
        print("  " + line)
    return 1 if server_errors or stats.unexpected or stats.corrupted else 0


if __name__ == "__main__":
    sys.exit(main())
