"""How the embedded store's latency grows with what it holds (FerretDB on SQLite, before/after a patch).

Tiny-file (1.4 KB) GET and PUT latency and GET /model/meta latency with 0 MiB, 200 MiB and 1 GiB of
other files stored and with 10 and 5,000 models registered, as median and p95 of N requests per
cell, and each median's ratio to the empty store's (0 MiB, 10 models). Also ferretdb's resident
memory while a 1 GiB file is downloaded through the API, and while the same file is read chunk by
chunk with one equality query per chunk (the read path tools/ferretdb/README.md proposes).

Each `--ferretdb-bin [LABEL=]PATH` runs the whole scenario on its own fresh stores, so one run
can put FerretDB as released ("before": tools/bin/ferretdb-unpatched) beside the patched build
("after": tools/bin/ferretdb). The service is the `flrepo` console script beside this Python,
started as `flrepo serve --embedded` with FLREPO_FERRETDB_BIN set; no project module is imported.

Usage: python bench/store.py --ferretdb-bin before=tools/bin/ferretdb-unpatched \\
           --ferretdb-bin after=tools/bin/ferretdb [--n 30] [--budget 90] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

MIB = 1024 * 1024
TINY = os.urandom(1434)  # the 1.4 KB model file
BLOCK = os.urandom(4 * MIB)  # large files are this block repeated
TIMEOUT = httpx.Timeout(900.0, connect=10.0)
CHUNKED_LIMIT_S = 120.0  # the chunk-by-chunk read stops here (without the patch, each query scans)


@dataclass
class Cell:
    stored_mib: int
    models: int
    samples: dict[str, list[float]] = field(default_factory=dict)  # op -> seconds


@dataclass
class Memory:
    file_mib: int
    idle_mib: float = math.nan
    api_peak_mib: float = math.nan
    api_seconds: float = math.nan
    chunked_peak_mib: float = math.nan
    chunked_seconds: float = math.nan
    chunked_mib: float = 0.0


@dataclass
class Run:
    label: str
    binary: Path
    cells: list[Cell] = field(default_factory=list)
    memory: Memory | None = None
    seconds: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


class Service:
    """`flrepo serve --embedded` on a fresh data directory, with the given FerretDB binary."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.workdir = workdir
        self.last = ""  # the model registered last (register_many)
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "flrepo"
        env = {
            **os.environ,
            "FLREPO_FERRETDB_BIN": str(binary),
            "FLREPO_SWEEP_INTERVAL_S": "0",
            "FLREPO_LOG_LEVEL": "WARNING",
        }
        for name in ("FLREPO_API_KEYS_FILE", "FLREPO_MONGODB_URL", "FLREPO_ANONYMOUS_ROLE"):
            env.pop(name, None)
        args = [str(exe), "serve", "--embedded", "--data-dir", str(workdir / "data")]
        args += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.log = open(workdir / "server.log", "ab")  # closed in stop()
        self.proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.base, timeout=TIMEOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flrepo serve exited with {self.proc.returncode}; see {workdir / 'server.log'}")
            try:
                if self.http.get("/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.base} did not become ready; see {workdir / 'server.log'}")
            time.sleep(0.2)
        ferret = [p for p in children(self.proc.pid) if "ferretdb" in Path(f"/proc/{p}/cmdline").read_text()]
        if len(ferret) != 1:
            raise RuntimeError(f"expected one ferretdb child of {self.proc.pid}, found {ferret}")
        self.ferretdb_pid = ferret[0]
        cmdline = Path(f"/proc/{self.ferretdb_pid}/cmdline").read_text().split("\0")
        self.mongo_url = f"mongodb://{cmdline[cmdline.index('-listen') + 1]}/"

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    # --- API calls ---------------------------------------------------------------------------

    def register(self, name: str, version: str = "1") -> None:
        body = {"model_name": name, "model_version": version, "meta": {"library": "numpy"}}
        r = self.http.post("/model", json=body)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"POST /model {name}: {r.status_code} {r.text[:200]}")

    def register_many(self, names: list[str], threads: int = 4) -> None:
        """Register `names`, the last one after all others: `self.last` is the newest model, the one
        a collection scan reaches last (GET meta looks it up)."""
        errors: list[BaseException] = []

        def work(part: list[str]) -> None:
            try:
                for name in part:
                    self.register(name)
            except BaseException as exc:
                errors.append(exc)

        head = names[:-1]
        pool = [threading.Thread(target=work, args=(head[i::threads],)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        if errors:
            raise errors[0]
        self.register(names[-1])
        self.last = names[-1]

    def put(self, name: str, body: bytes | Iterator[bytes], version: str = "1") -> None:
        r = self.http.put(
            f"/model/{name}/{version}", content=body, headers={"Content-Type": "application/octet-stream"}
        )
        if r.status_code not in (200, 201, 204):
            raise RuntimeError(f"PUT /model/{name}/{version}: {r.status_code} {r.text[:200]}")

    def get(self, name: str, version: str = "1") -> int:
        size = 0
        with self.http.stream("GET", f"/model/{name}/{version}") as r:
            if r.status_code != 200:
                raise RuntimeError(f"GET /model/{name}/{version}: {r.status_code}")
            for part in r.iter_raw(1 * MIB):
                size += len(part)
        return size

    def meta(self, name: str, version: str = "1") -> None:
        r = self.http.get("/model/meta", params={"model_name": name, "model_version": version})
        if r.status_code != 200 or r.json()["meta"]["library"] != "numpy":
            raise RuntimeError(f"GET /model/meta {name}: {r.status_code} {r.text[:200]}")


def large(mib: int) -> Iterator[bytes]:
    left = mib * MIB
    while left:
        part = BLOCK[: min(left, len(BLOCK))]
        left -= len(part)
        yield part


def timed(fn: Callable[[], object], n: int, budget: float) -> list[float]:
    """Up to n timings of fn, fewer once `budget` seconds are spent (at least 3). The first call is
    a warm-up, dropped when it took under a second."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    samples = [first] if first >= 1 else []
    spent = first
    while len(samples) < n and (len(samples) < 3 or spent < budget):
        t = time.perf_counter()
        fn()
        took = time.perf_counter() - t
        samples.append(took)
        spent += took
    return samples


def measure(svc: Service, cell: Cell, n: int, budget: float) -> Cell:
    def put() -> None:
        svc.put("tiny", TINY)

    def get() -> None:
        if svc.get("tiny") != len(TINY):
            raise RuntimeError("GET /model/tiny/1 returned a wrong size")

    cell.samples["GET file"] = timed(get, n, budget)
    cell.samples["PUT file"] = timed(put, n, budget)
    cell.samples["GET meta"] = timed(lambda: svc.meta(svc.last), n, budget)
    line = ", ".join(f"{op} {statistics.median(s) * 1000:.1f} ms (n={len(s)})" for op, s in cell.samples.items())
    print(f"  {cell.stored_mib} MiB, {cell.models} models: {line}", flush=True)
    return cell


class PeakRSS:
    """Samples a process's RSS every 50 ms while active."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib(self.pid))


def chunked_read(mongo_url: str, db: str, file_id: str, deadline: float, window: int = 1) -> int:
    """Read a stored file as tools/ferretdb/README.md proposes: one (files_id, n) equality query per
    chunk, no sort, `window` of them in flight. Gives up (returning the bytes read so far) at
    `deadline` (time.monotonic())."""
    from bson import ObjectId  # the driver the project already depends on
    from pymongo import MongoClient

    with MongoClient(mongo_url, maxPoolSize=window + 1) as client, ThreadPoolExecutor(window) as pool:
        grid = client[db]
        fid = ObjectId(file_id) if ObjectId.is_valid(file_id) else file_id
        doc = grid["fs.files"].find_one({"_id": fid})
        if doc is None:
            raise RuntimeError(f"no GridFS file {file_id}")
        count = math.ceil(doc["length"] / doc["chunkSize"])

        def fetch(n: int) -> Any:
            return grid["fs.chunks"].find_one({"files_id": fid, "n": n}, {"_id": 0, "data": 1})

        pending = deque(pool.submit(fetch, n) for n in range(min(window, count)))
        size, following = 0, len(pending)
        while pending and time.monotonic() < deadline:
            chunk = pending.popleft().result()
            if following < count:
                pending.append(pool.submit(fetch, following))
                following += 1
            if chunk is None:
                raise RuntimeError(f"a chunk of {file_id} is missing")
            size += len(chunk["data"])
        for future in pending:
            future.cancel()
        return size


def memory(svc: Service, mib: int, window: int) -> Memory:
    """ferretdb's RSS while the big model's file is read chunk by chunk, then through the API (in
    that order: Go hands freed memory back to the OS only slowly, so the larger peak goes last)."""
    mem = Memory(file_mib=mib)
    time.sleep(5)
    mem.idle_mib = rss_mib(svc.ferretdb_pid)
    file_id = svc.http.get("/model/meta", params={"model_name": "big", "model_version": "1"}).json()["model_id"]
    with PeakRSS(svc.ferretdb_pid) as peak:
        t = time.perf_counter()
        limit = time.monotonic() + CHUNKED_LIMIT_S
        got = chunked_read(svc.mongo_url, "repository_grid", file_id, limit, window)
        mem.chunked_seconds = time.perf_counter() - t
    mem.chunked_peak_mib = peak.peak
    mem.chunked_mib = got / MIB
    print(f"  chunk-by-chunk read: {got / MIB:.0f} MiB in {mem.chunked_seconds:.1f} s, RSS peak {peak.peak:.0f} MiB")
    with PeakRSS(svc.ferretdb_pid) as peak:
        t = time.perf_counter()
        got = svc.get("big")
        mem.api_seconds = time.perf_counter() - t
    if got != mib * MIB:
        raise RuntimeError(f"GET /model/big/1 returned {got} bytes")
    mem.api_peak_mib = peak.peak
    print(f"  download {mib} MiB: {mem.api_seconds:.1f} s, ferretdb RSS {mem.idle_mib:.0f} -> {peak.peak:.0f} MiB")
    return mem


def scenario(label: str, binary: Path, args: argparse.Namespace, root: Path) -> Run:
    run = Run(label, binary)
    started = time.monotonic()
    mid, big, many = args.mid_mib, args.big_mib, args.models
    print(f"== {label}: {binary}", flush=True)

    if args.memory_only:
        svc = Service(binary, root / f"{label}-m")
        try:
            svc.register_many(["big"])
            svc.put("big", large(big))
            run.memory = memory(svc, big, args.chunk_window)
        finally:
            svc.stop()
            shutil.rmtree(root / f"{label}-m", ignore_errors=True)
        run.seconds = time.monotonic() - started
        return run

    # Store A: 10 models; the big model's file grows 0 -> mid -> big MiB; then `many` models.
    svc = Service(binary, root / f"{label}-a")
    try:
        svc.register_many(["tiny", "big"] + [f"filler-{i}" for i in range(8)])
        svc.put("tiny", TINY)
        run.cells.append(measure(svc, Cell(0, 10), args.n, args.budget))
        svc.put("big", large(mid))
        run.cells.append(measure(svc, Cell(mid, 10), args.n, args.budget))
        t = time.perf_counter()
        svc.put("big", large(big))  # replaces the mid-sized file: `big` MiB stored
        print(f"  PUT {big} MiB (replacing {mid} MiB): {time.perf_counter() - t:.1f} s", flush=True)
        run.memory = memory(svc, big, args.chunk_window)
        run.cells.append(measure(svc, Cell(big, 10), args.n, args.budget))
        svc.register_many([f"filler-{i}" for i in range(8, many - 2)])
        run.cells.append(measure(svc, Cell(big, many), args.n, args.budget))
    finally:
        svc.stop()
        shutil.rmtree(root / f"{label}-a", ignore_errors=True)

    # Store B: `many` models; then the big model's file of mid MiB.
    svc = Service(binary, root / f"{label}-b")
    try:
        svc.register_many(["tiny", "big"] + [f"filler-{i}" for i in range(many - 2)])
        svc.put("tiny", TINY)
        run.cells.append(measure(svc, Cell(0, many), args.n, args.budget))
        svc.put("big", large(mid))
        run.cells.append(measure(svc, Cell(mid, many), args.n, args.budget))
    finally:
        svc.stop()
        shutil.rmtree(root / f"{label}-b", ignore_errors=True)
    run.seconds = time.monotonic() - started
    run.cells.sort(key=lambda c: (c.models, c.stored_mib))
    return run


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    v = seconds * 1000
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def report(runs: list[Run], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"## Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — embedded store vs. what it holds (`bench/store.py`)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f} GiB, "
        f"Linux {platform.release()}, python {platform.python_version()}. "
        + "; ".join(f"{r.label}: `{r.binary}` ({r.seconds / 60:.0f} min)" for r in runs)
        + ".",
    ]
    if all(r.cells for r in runs):
        lines += latency_table(runs, args)
    lines += ["", "ferretdb's resident memory (VmRSS) while a large file is read:", ""]
    lines += [
        f"| binary | file | idle | one query per chunk ({args.chunk_window} in flight): peak RSS, time "
        "| API download: peak RSS, time |"
    ]
    lines += ["|---|---:|---:|---:|---:|"]
    for r in runs:
        m = r.memory
        if m:
            lines.append(
                f"| {r.label} | {m.file_mib} MiB | {m.idle_mib:.0f} MiB | {m.chunked_peak_mib:,.0f} MiB, "
                f"{m.chunked_seconds:.1f} s"
                + ("" if m.chunked_mib >= m.file_mib else f" (stopped after {m.chunked_mib:.0f} MiB)")
                + f" | {m.api_peak_mib:,.0f} MiB, {m.api_seconds:.1f} s |"
            )
    return "\n".join(lines) + "\n"


def latency_table(runs: list[Run], args: argparse.Namespace) -> list[str]:
    ops = ["GET file", "PUT file", "GET meta"]
    lines = [
        "",
        f"Latency in ms: median / p95 of n requests per cell (n = {args.n}, fewer where a cell's requests "
        f"took over {args.budget:.0f} s in all: at least 3, the n column says; with n < 20 the p95 is the "
        "slowest sample). **Nx**: the median's ratio to the same binary's empty store (0 MiB, 10 models). "
        "The file is 1.4 KB; `GET meta` is `GET /model/meta?model_name=..&model_version=..` for the model "
        "registered last (a collection scan finds it last); "
        "PUT replaces the file (write the new one, switch, delete the old one).",
        "",
    ]
    header = "| stored | models | " + " | ".join(f"{op} {r.label}" for op in ops for r in runs) + " |"
    lines += [header, "|---:|---:|" + "---:|" * (len(ops) * len(runs))]
    base = {r.label: next(c for c in r.cells if c.stored_mib == 0 and c.models == 10) for r in runs}
    keys = [(c.stored_mib, c.models) for c in runs[0].cells]
    for stored, models in keys:
        row = [f"{stored} MiB", f"{models:,}"]
        for op in ops:
            for r in runs:
                cell = next(c for c in r.cells if (c.stored_mib, c.models) == (stored, models))
                s = cell.samples[op]
                ratio = statistics.median(s) / statistics.median(base[r.label].samples[op])
                row.append(f"{ms(statistics.median(s))} / {ms(pct(s, 0.95))} (n={len(s)}) **{ratio:.1f}x**")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_results(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n\nNewest run first.\n"
    marker = "Newest run first.\n"
    if marker in text:
        head, tail = text.split(marker, 1)
        text = f"{head}{marker}\n{section}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{section}"
    path.write_text(text)


def ferretdb_bins(parser: argparse.ArgumentParser, specs: list[str]) -> list[tuple[str, Path]]:
    """`--ferretdb-bin [LABEL=]PATH` values as (label, binary); a missing binary is a usage error."""
    bins = []
    for spec in specs:
        label, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        binary = Path(path).resolve()
        if not binary.exists():
            parser.error(f"{binary} does not exist")
        bins.append((label or binary.name, binary))
    return bins


def command_line(script: str) -> str:
    """This run's command as RESULTS.md shows it (arguments quoted where the shell would need it)."""
    return f"python {script} " + " ".join(a if re.fullmatch(r"[\w./=:,-]+", a) else repr(a) for a in sys.argv[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ferretdb-bin", action="append", required=True, metavar="[LABEL=]PATH")
    parser.add_argument("--n", type=int, default=30, help="requests per cell (default 30)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per cell and operation before n shrinks")
    parser.add_argument("--mid-mib", type=int, default=200)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--models", type=int, default=5000)
    parser.add_argument("--chunk-window", type=int, default=1, help="chunk look-ups in flight (default 1)")
    parser.add_argument("--memory-only", action="store_true", help="only the RSS measurement, on its own store")
    parser.add_argument("--out", type=Path, help="also write the table at the top of this Markdown file")
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temporary directory)")
    args = parser.parse_args()

    bins = ferretdb_bins(parser, args.ferretdb_bin)
    command = command_line("bench/store.py")
    root = Path(tempfile.mkdtemp(prefix="flrepo-store-", dir=args.workdir))
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
