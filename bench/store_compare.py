"""flrepo beside the raw driver on the same embedded store, patched and as released (issue #21).

For each `--ferretdb-bin [LABEL=]PATH` (FerretDB with tools/ferretdb/pushdown.patch, and as released),
on a fresh `flrepo serve --embedded`:

1. Transfers: upload and download of 16 MiB, 256 MiB and 1 GiB files through the API, and the same
   bytes with the raw driver on the same store (PyMongo's GridFS writer, `GridIn`; the driver's chunk
   query `find({files_id}).sort(n)`, which is what GridOut sends, with batches of 4 chunks: GridOut's
   own default batch fails on FerretDB past ~200 MiB), with 0 and then `--ballast-mib` of other files
   stored. Each repetition runs driver and API interleaved (their order alternates); the table gives
   medians and the ratio API / driver (>= 1: flrepo is as fast).
2. Memory: ferretdb's peak RSS while the raw driver reads a file of the largest size with GridOut's
   sorted chunk query, then the service's (Python) RSS growth over idle and ferretdb's peak RSS while a
   file of that size downloads through the API.
3. Lists: `GET /model` (the default page: up to 1,000 models) with 1,000 and 10,000 models, median of
   n sequential requests, beside aerOS 1.1.0's handler (bench/aeros_list_app.py: one plain find) on
   the same store, interleaved; then 16 clients for 30 s at 10,000 models: every request must complete.

Usage: python bench/store_compare.py --ferretdb-bin patched=tools/bin/ferretdb \\
           --ferretdb-bin stock=tools/bin/ferretdb-unpatched [--sizes 16,256,1024] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from gridfs import GridFSBucket
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.store import (
    MIB,
    TIMEOUT,
    PeakRSS,
    Service,
    command_line,
    ferretdb_bins,
    free_port,
    large,
    rss_mib,
    write_results,
)

DB, GRID = "repository", "repository_grid"


@dataclass
class Transfer:
    stored_mib: int
    size_mib: int
    samples: dict[str, list[float]] = field(default_factory=dict)  # "raw up", "api up", ... -> seconds

    def median(self, key: str) -> float:
        return statistics.median(self.samples[key])

    def ratio(self, direction: str) -> float:
        # Speed ratio API / driver = time ratio driver / API.
        return self.median(f"raw {direction}") / self.median(f"api {direction}")


@dataclass
class Lists:
    models: int
    flrepo_s: list[float] = field(default_factory=list)
    aeros_s: list[float] = field(default_factory=list)
    load: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    label: str
    binary: Path
    transfers: list[Transfer] = field(default_factory=list)
    lists: list[Lists] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)
    seconds: float = 0.0


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


class Raw:
    """The raw driver on the store the service uses."""

    def __init__(self, url: str) -> None:
        self.client: MongoClient = MongoClient(url)
        self.grid = self.client[GRID]
        self.bucket = GridFSBucket(self.grid, chunk_size_bytes=261120)

    def upload(self, mib: int) -> tuple[float, Any]:
        started = time.perf_counter()
        grid_in = self.bucket.open_upload_stream("raw.bin")
        for part in large(mib):
            grid_in.write(part)
        grid_in.close()
        return time.perf_counter() - started, grid_in._id

    def download(self, file_id: Any, mib: int) -> float:
        started = time.perf_counter()
        read = 0
        cursor = self.grid["fs.chunks"].find({"files_id": file_id}, {"_id": 0, "data": 1}).sort([("n", 1)])
        for doc in cursor.batch_size(4):
            read += len(doc["data"])
        if read != mib * MIB:
            raise RuntimeError(f"raw download read {read} bytes, not {mib * MIB}")
        return time.perf_counter() - started

    def delete(self, file_id: Any) -> None:
        self.grid["fs.files"].delete_one({"_id": file_id})
        self.grid["fs.chunks"].delete_many({"files_id": file_id})

    def close(self) -> None:
        self.client.close()


def api_upload(svc: Service, name: str, mib: int) -> float:
    svc.register(name)
    started = time.perf_counter()
    svc.put(name, large(mib))
    return time.perf_counter() - started


def api_download(svc: Service, name: str, mib: int) -> float:
    started = time.perf_counter()
    got = svc.get(name)
    if got != mib * MIB:
        raise RuntimeError(f"GET /model/{name}/1 returned {got} bytes, not {mib * MIB}")
    return time.perf_counter() - started


def api_delete(svc: Service, name: str) -> None:
    svc.http.delete(f"/model/{name}/1").raise_for_status()


def transfers(svc: Service, raw: Raw, stored: int, mib: int, repeats: int, tag: str) -> Transfer:
    cell = Transfer(stored, mib, {k: [] for k in ("raw up", "api up", "raw down", "api down")})
    for rep in range(repeats):
        name = f"t-{tag}-{stored}-{mib}-{rep}"
        # Alternate which goes first, so drift in the machine's speed hits both alike.
        first_raw = rep % 2 == 0
        ups = [("raw", lambda: raw.upload(mib)), ("api", lambda name=name: (api_upload(svc, name, mib), name))]
        ids: dict[str, Any] = {}
        for who, fn in ups if first_raw else ups[::-1]:
            took, ident = fn()
            cell.samples[f"{who} up"].append(took)
            ids[who] = ident
        downs = [
            ("raw", lambda ids=ids: raw.download(ids["raw"], mib)),
            ("api", lambda name=name: api_download(svc, name, mib)),
        ]
        for who, fn in downs if first_raw else downs[::-1]:
            cell.samples[f"{who} down"].append(fn())
        # Not timed: keep what is stored at `stored`.
        raw.delete(ids["raw"])
        api_delete(svc, name)
    print(
        f"  {stored} MiB stored, {mib} MiB: up {cell.ratio('up'):.2f}x, down {cell.ratio('down'):.2f}x "
        f"(api up {cell.median('api up'):.1f} s, down {cell.median('api down'):.1f} s; load {loadavg()})",
        flush=True,
    )
    return cell


def memory(svc: Service, raw: Raw, mib: int) -> dict[str, float]:
    """Peaks while another client reads a file of `mib` whole with the driver's sorted chunk query
    (what GridOut sends: FerretDB as released sorts it in memory), then while flrepo downloads one."""
    svc.register("mem")
    for attempt in range(3):  # a PUT may meet a 503 on a machine this loaded: say so, try again
        try:
            svc.put("mem", large(mib))
            break
        except RuntimeError as exc:
            print(f"  memory: upload attempt {attempt + 1} failed: {exc}", flush=True)
    _, raw_id = raw.upload(mib)
    time.sleep(3)
    idle_service, idle_ferret = rss_mib(svc.proc.pid), rss_mib(svc.ferretdb_pid)
    with PeakRSS(svc.ferretdb_pid) as driver_ferret:
        driver_took = raw.download(raw_id, mib)
    raw.delete(raw_id)
    with PeakRSS(svc.proc.pid) as service, PeakRSS(svc.ferretdb_pid) as ferret:
        took = api_download(svc, "mem", mib)
    api_delete(svc, "mem")
    found = {
        "file_mib": mib,
        "seconds": took,
        "service_idle": idle_service,
        "service_peak": service.peak,
        "ferretdb_idle": idle_ferret,
        "ferretdb_peak": ferret.peak,
        "driver_seconds": driver_took,
        "ferretdb_driver_peak": driver_ferret.peak,
    }
    print(
        f"  memory, {mib} MiB: driver's sorted read {driver_took:.1f} s, ferretdb peak {driver_ferret.peak:.0f} MiB; "
        f"then API download {took:.1f} s, service +{service.peak - idle_service:.0f} MiB, "
        f"ferretdb peak {ferret.peak:.0f} MiB (idle before both {idle_ferret:.0f} MiB; load {loadavg()})",
        flush=True,
    )
    return found


def seed(raw: Raw, count: int) -> None:
    models = raw.client[DB]["models"]
    have = models.count_documents({})
    now = datetime.now(UTC)
    docs = [
        {
            "model_name": f"m{i}",
            "model_version": "v1",
            "meta": {"library": "keras", "description": f"benchmark model {i}"},
            "model_id": None,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(have, count)
    ]
    for start in range(0, len(docs), 1000):
        models.insert_many(docs[start : start + 1000])


class AerosApp:
    """bench/aeros_list_app.py under uvicorn on the same store."""

    def __init__(self, mongo_url: str, workdir: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "FLREPO_MONGODB_URL": mongo_url, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.log = open(workdir / "aeros.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.aeros_list_app:app",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=TIMEOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.http.get("/docs", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the aerOS list app did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def list_latency(svc: Service, aeros: AerosApp, models: int, n: int) -> Lists:
    cell = Lists(models)
    for rep in range(n + 1):
        pair = [("flrepo", svc.http), ("aeros", aeros.http)]
        for who, http in pair if rep % 2 == 0 else pair[::-1]:
            started = time.perf_counter()
            r = http.get("/model")
            took = time.perf_counter() - started
            # aerOS lists every model; flrepo its first page (FLREPO_LIST_CAP, 1,000).
            if r.status_code != 200 or len(r.json()) != (min(models, 1000) if who == "flrepo" else models):
                raise RuntimeError(f"{who} GET /model: {r.status_code}, {len(r.content)} bytes")
            if rep:  # the first pair warms up
                (cell.flrepo_s if who == "flrepo" else cell.aeros_s).append(took)
    print(
        f"  GET /model, {models} models: flrepo {statistics.median(cell.flrepo_s) * 1000:.0f} ms, "
        f"aerOS {statistics.median(cell.aeros_s) * 1000:.0f} ms (load {loadavg()})",
        flush=True,
    )
    return cell


async def _load(base: str, clients: int, seconds: float) -> dict[str, float]:
    done, failed, latencies = 0, 0, []
    stop = time.monotonic() + seconds

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal done, failed
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                r = await http.get("/model")
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            done, failed = done + ok, failed + (not ok)

    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(300.0)) as http:
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    latencies.sort()
    return {
        "clients": clients,
        "seconds": seconds,
        "completed": done,
        "failed": failed,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else float("nan"),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


def lists(run: Run, svc: Service, raw: Raw, args: argparse.Namespace, workdir: Path) -> None:
    aeros = AerosApp(svc.mongo_url, workdir)
    try:
        for models in args.models:
            seed(raw, models)
            run.lists.append(list_latency(svc, aeros, models, args.n))
        run.lists[-1].load = asyncio.run(_load(svc.base, 16, args.load_seconds))
        print(f"  16 clients, {args.load_seconds:.0f} s, {args.models[-1]} models: {run.lists[-1].load}")
    finally:
        aeros.stop()


def scenario(label: str, binary: Path, args: argparse.Namespace, root: Path) -> Run:
    run = Run(label, binary)
    started = time.monotonic()
    print(f"== {label}: {binary}", flush=True)
    svc = Service(binary, root / label)
    raw = Raw(svc.mongo_url)
    try:
        run.loads.append(loadavg())
        for stored in (0, args.ballast_mib) if not args.skip_transfers else ():
            if stored:
                for i in range(0, stored, 64):
                    raw.bucket.upload_from_stream(f"ballast-{i}", b"".join(large(min(64, stored - i))))
            for mib in args.sizes:
                repeats = args.repeats if mib < 1024 else max(1, args.repeats - 1)
                run.transfers.append(transfers(svc, raw, stored, mib, repeats, label))
        if not args.skip_memory:
            run.memory = memory(svc, raw, max(args.sizes))
        if not args.skip_lists:
            lists(run, svc, raw, args, root / label)
        run.loads.append(loadavg())
    finally:
        raw.close()
        svc.stop()
        shutil.rmtree(root / label, ignore_errors=True)
    run.seconds = time.monotonic() - started
    return run


def report(runs: list[Run], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"## Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — flrepo beside the raw driver, patched and stock FerretDB "
        "(`bench/store_compare.py`)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), shared with other jobs; Linux {platform.release()}, "
        f"python {platform.python_version()}. "
        + "; ".join(
            f"{r.label}: `{r.binary}` ({r.seconds / 60:.0f} min, load average {' → '.join(r.loads)})" for r in runs
        )
        + ".",
        "",
        "Transfers: median seconds of the repetitions (driver and API interleaved in each; 1 GiB: one fewer "
        f"repetition, repeats = {args.repeats}); **ratio** = API speed / raw driver speed on the same store "
        "(goal ≥ 0.9).",
        "",
        "| store | stored | file | driver up | API up | **up ratio** | driver down | API down | **down ratio** |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        for t in r.transfers:
            lines.append(
                f"| {r.label} | {t.stored_mib} MiB | {t.size_mib} MiB | {t.median('raw up'):.2f} s | "
                f"{t.median('api up'):.2f} s | **{t.ratio('up'):.2f}** | {t.median('raw down'):.2f} s | "
                f"{t.median('api down'):.2f} s | **{t.ratio('down'):.2f}** |"
            )
    lines += [
        "",
        "Memory while another client reads a file of the largest size whole with the driver's sorted chunk query "
        "(GridOut's), then while a file of that size downloads through the API (goals: service growth ≤ 64 MiB, "
        "ferretdb ≤ 256 MiB):",
        "",
        "| store | file | driver's read | ferretdb peak in it | API download | service idle → peak (growth) "
        "| ferretdb idle → peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        m = r.memory
        if not m:
            continue
        lines.append(
            f"| {r.label} | {m['file_mib']:.0f} MiB | {m['driver_seconds']:.1f} s | "
            f"{m['ferretdb_driver_peak']:.0f} MiB | "
            f"{m['seconds']:.1f} s | {m['service_idle']:.0f} → "
            f"{m['service_peak']:.0f} MiB (**+{m['service_peak'] - m['service_idle']:.0f} MiB**) | "
            f"{m['ferretdb_idle']:.0f} → **{m['ferretdb_peak']:.0f} MiB** |"
        )
    lines += [
        "",
        f"`GET /model` (default page, up to 1,000 models), median of {args.n} sequential requests, flrepo and "
        "aerOS 1.1.0's handler (bench/aeros_list_app.py) interleaved on the same store:",
        "",
        "| store | models | flrepo | aerOS 1.1.0 | flrepo / aerOS |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        for c in r.lists:
            f, a = statistics.median(c.flrepo_s) * 1000, statistics.median(c.aeros_s) * 1000
            lines.append(f"| {r.label} | {c.models:,} | {f:.0f} ms | {a:.0f} ms | **{f / a:.2f}** |")
    lines += ["", "16 clients, `GET /model` for the run's time, at the largest model count:", ""]
    lines += [
        "| store | models | seconds | completed | failed | p50 | slowest |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if not r.lists:
            continue
        c = r.lists[-1]
        ld = c.load
        lines.append(
            f"| {r.label} | {c.models:,} | {ld['seconds']:.0f} | {ld['completed']:.0f} | **{ld['failed']:.0f}** | "
            f"{ld['p50_ms']:.0f} ms | {ld['max_ms']:.0f} ms |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ferretdb-bin", action="append", required=True, metavar="[LABEL=]PATH")
    parser.add_argument("--sizes", default="16,256,1024", help="file sizes in MiB (default 16,256,1024)")
    parser.add_argument("--ballast-mib", type=int, default=1024, help="other files stored in the second pass")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per transfer cell (1 GiB: one fewer)")
    parser.add_argument("--models", default="1000,10000", help="model counts for the list latency")
    parser.add_argument("--n", type=int, default=20, help="sequential list requests per count")
    parser.add_argument("--load-seconds", type=float, default=30.0)
    parser.add_argument("--skip-transfers", action="store_true", help="no transfer table")
    parser.add_argument("--skip-memory", action="store_true", help="no memory table")
    parser.add_argument("--skip-lists", action="store_true", help="no list latency tables")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.models = [int(s) for s in args.models.split(",")]
    bins = ferretdb_bins(parser, args.ferretdb_bin)
    command = command_line("bench/store_compare.py")
    root = Path(tempfile.mkdtemp(prefix="flrepo-compare-", dir=args.workdir))
    try:
        runs = [scenario(label, binary, args, root) for label, binary in bins]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    section = report(runs, args, command)
    print()
    print(section)
    if args.out:
        write_results(args.out, section)


if __name__ == "__main__":
    main()
