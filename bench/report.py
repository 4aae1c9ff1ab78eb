"""The Markdown report of a run, and where it is recorded."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.common import NOTES


def versions(mongo_url: str) -> dict[str, str]:
    import fastapi
    import pymongo
    import uvicorn

    async def server_version() -> str:
        client: AsyncMongoClient = AsyncMongoClient(mongo_url)
        info = await client.admin.command("buildInfo")
        await client.close()
        ferret = info.get("ferretdbVersion") or info.get("ferretdb", {}).get("version")
        return f"MongoDB wire {info.get('version')}" + (f" (FerretDB {ferret}, SQLite)" if ferret else "")

    return {
        "python": platform.python_version(),
        "pymongo": pymongo.version,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "database": asyncio.run(server_version()),
        "load generator": "wrk" if shutil.which("wrk") else "httpx (separate process)",
    }


def machine() -> str:
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores ({cpu}), {int(mem.split()[1]) // 1024 // 1024} GiB"


def report(
    mode: str,
    info: dict[str, str],
    tp: list[dict[str, Any]],
    mem: dict[str, float],
    meta: list[dict[str, Any]],
    fed: dict[str, Any],
) -> str:
    share = 100 * fed["checkpoint_ms"] / 1000 / max(fed["round_s"], 1e-9)  # of a round's time
    lines = [
        f"## Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — mode `{mode}`",
        "",
        f"Machine: {machine()}. " + ", ".join(f"{k}: {v}" for k, v in info.items()) + ".",
        "",
        "### 1. File throughput (MB/s; ratio = API / direct AsyncGridFSBucket; goals up ≥ 0.8, down ≥ 0.9)",
        "",
        "| store holds | size | direct up | API up | ratio up | direct down | API down | ratio down |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in tp:
        up, down = r["api_up"] / r["direct_up"], r["api_down"] / r["direct_down"]
        lines.append(
            f"| {r['stored_mib']} MiB | {r['size_mib']} MiB | {r['direct_up']:.1f} | {r['api_up']:.1f} | **{up:.2f}** "
            f"| {r['direct_down']:.1f} | {r['api_down']:.1f} | **{down:.2f}** |"
        )
    lines += [f"\nNote: {note}." for note in sorted(NOTES)]
    lines += [
        "",
        f"### 2. Memory (goal: growth ≤ 64 MiB while a {mem['size_mib']:.0f} MiB file goes up and down)",
        "",
        f"Idle RSS {mem['idle']:.1f} MiB, peak {mem['peak']:.1f} MiB, **growth {mem['growth']:.1f} MiB**.",
        "",
        "### 3. Metadata (requests/s and latency; ratio = API / minimal app; goal ≥ 0.7)",
        "",
        "| endpoint | concurrency | API req/s | API p50 / p99 ms | minimal req/s | minimal p50 / p99 ms | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in meta:
        a, m = r["api"], r["minimal"]
        name = "GET /model/meta" if r["endpoint"] == "meta" else "GET /model?limit=100"
        lines.append(
            f"| {name} | {r['concurrency']} | {a.rps:.0f} | {a.p50_ms:.1f} / {a.p99_ms:.1f} | {m.rps:.0f} "
            f"| {m.p50_ms:.1f} / {m.p99_ms:.1f} | **{a.rps / m.rps if m.rps else float('nan'):.2f}** |"
        )
    errors = sum(r["api"].errors + r["minimal"].errors for r in meta)
    lines += [
        "",
        f"Non-2xx responses during the metadata runs: {errors}.",
        "",
        "### 4. Federated round overhead",
        "",
        f"A {fed['framework']} MLP (64-32-10), FedAvg, {fed['clients']:.0f} clients, {fed['rounds']:.0f} rounds. "
        f"Through the repository (task, signed strategy, model and transformation downloads, status reports, a "
        f"checkpoint per round, the result and the published model): {fed['repo_s']:.2f} s. Bare Flower, same model, "
        f"strategy, clients and data: {fed['bare_s']:.2f} s. **Ratio {fed['ratio']:.2f}** (median of "
        f"{fed['repeats']:.0f}; goal ≤ 1.15).",
        "",
        f"One checkpoint (register + upload the round's .npz): median **{fed['checkpoint_ms']:.1f} ms**, against a "
        f"median round of {fed['round_s']:.2f} s ({share:.1f} %).",
        "",
    ]
    return "\n".join(lines)


def publish(text: str, out: Path | None) -> int:
    """A benchmark's last step: print its section and, with `--out`, record it; the exit code."""
    print(text)
    if out:
        record(out, text)
    return 0


def record(path: Path, text: str) -> None:
    """Put a run's section at the top of a results file (newest run first)."""
    previous = path.read_text() if path.exists() else "# Benchmark results\n\nNewest run first.\n\n"
    head, _, rest = previous.partition("\n## ")
    path.write_text(head.rstrip() + "\n\n" + text.rstrip() + "\n" + ("\n## " + rest if rest else ""))
