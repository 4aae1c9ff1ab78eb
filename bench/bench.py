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
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from gridfs import AsyncGridFSBucket
from pymongo import AsyncMongoClient
from pymongo.errors import ProtocolError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flrepo.server.embedded import EmbeddedMongo, api_server, free_port, reap

MIB = 1024 * 1024
NOTES: set[str] = set()  # caveats found while measuring, printed with the report
BLOCK = os.urandom(16 * MIB)  # files are this block repeated: no generator cost inside the timing
WRITE = 1 * MIB  # the size of each write and of each HTTP body chunk

MODES = {
    "quick": {
        "sizes": [4 * MIB],
        "ballast": 32 * MIB,
        "memory": 32 * MIB,
        "models": 500,
        "fl_repeats": 1,
        "seconds": 2,
        "levels": [1, 16],
    },
    "full": {
        "sizes": [16 * MIB, 256 * MIB, 1024 * MIB],
        "ballast": 512 * MIB,
        "memory": 1024 * MIB,
        "models": 10_000,
        "fl_repeats": 3,
        "seconds": 10,
        "levels": [1, 16, 64],
    },
}


def chunks(size: int) -> list[memoryview]:
    view = memoryview(BLOCK)
    out, left = [], size
    while left:
        n = min(WRITE, left)
        offset = (size - left) % len(BLOCK)
        n = min(n, len(BLOCK) - offset)
        out.append(view[offset : offset + n])
        left -= n
    return out


# --- 1. throughput ----------------------------------------------------------------------------


async def direct_roundtrip(bucket: AsyncGridFSBucket, size: int) -> tuple[float, float]:
    started = time.perf_counter()
    grid_in = bucket.open_upload_stream("bench.bin")
    for piece in chunks(size):
        await grid_in.write(bytes(piece))
    await grid_in.close()
    up = time.perf_counter() - started
    started = time.perf_counter()
    try:
        grid_out = await bucket.open_download_stream(grid_in._id)
        read = 0
        while chunk := await grid_out.readchunk():
            read += len(chunk)
    except ProtocolError:
        # FerretDB answers GridOut's getMore with one reply over the 48 MB message limit once a
        # file passes ~200 MiB; then the driver's own chunk query with a bounded batch stands in.
        NOTES.add(
            "direct download: AsyncGridFSBucket fails on this server for large files (reply over the "
            "message size limit); the direct figure then comes from the same chunk query with batch_size 4"
        )
        started = time.perf_counter()
        read = 0
        cursor = bucket._chunks.find({"files_id": grid_in._id}).sort([("n", 1)]).batch_size(4)
        async for doc in cursor:
            read += len(doc["data"])
    down = time.perf_counter() - started
    assert read == size
    await bucket.delete(grid_in._id)
    return up, down


async def api_roundtrip(http: httpx.AsyncClient, size: int, name: str) -> tuple[float, float]:
    async def body() -> AsyncIterator[bytes]:
        for piece in chunks(size):
            yield bytes(piece)

    await http.post("/model", json={"model_name": name, "model_version": "v", "meta": {"library": "bench"}})
    started = time.perf_counter()
    r = await http.put(f"/model/{name}/v", content=body(), headers={"content-type": "application/octet-stream"})
    up = time.perf_counter() - started
    assert r.status_code == 204, r.text
    started = time.perf_counter()
    read = 0
    async with http.stream("GET", f"/model/{name}/v") as response:
        async for chunk in response.aiter_raw(WRITE):
            read += len(chunk)
    down = time.perf_counter() - started
    assert read == size
    await http.delete(f"/model/{name}/v")
    return up, down


async def throughput(mongo_url: str, db: str, base: str, sizes: list[int], ballast: int) -> list[dict[str, Any]]:
    """Each size in an empty store, then again in a store that already holds `ballast` bytes:
    a store in use is the realistic case, and FerretDB answers any chunk query but a primary-key
    look-up by scanning every stored chunk."""
    rows = []
    client: AsyncMongoClient = AsyncMongoClient(mongo_url)
    bucket = AsyncGridFSBucket(client[f"{db}_grid"])
    async with httpx.AsyncClient(base_url=base, timeout=3600) as http:
        for stored in (0, ballast):
            if stored:
                for i in range(0, stored, 64 * MIB):
                    await bucket.upload_from_stream(f"ballast{i}", BLOCK * 4)
            for size in sizes:
                # Alternate the two so drift in the machine's speed hits both alike.
                d_up, d_down = await direct_roundtrip(bucket, size)
                a_up, a_down = await api_roundtrip(http, size, f"tp{size}")
                rows.append(
                    {
                        "stored_mib": stored // MIB,
                        "size_mib": size // MIB,
                        "direct_up": size / MIB / d_up,
                        "api_up": size / MIB / a_up,
                        "direct_down": size / MIB / d_down,
                        "api_down": size / MIB / a_down,
                    }
                )
    await client.close()
    return rows


# --- 2. memory --------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def memory(base: str, pid: int, size: int) -> dict[str, float]:
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mib(pid))
            time.sleep(0.02)

    async with httpx.AsyncClient(base_url=base, timeout=3600) as http:
        await api_roundtrip(http, 4 * MIB, "warmup")  # import paths, pools and buffers used once
        idle = rss_mib(pid)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            await api_roundtrip(http, size, "memory")
        finally:
            stop.set()
            thread.join()
    return {"size_mib": size / MIB, "idle": idle, "peak": peak, "growth": peak - idle}


# --- 3. metadata ------------------------------------------------------------------------------


async def seed_models(mongo_url: str, db: str, count: int) -> None:
    client: AsyncMongoClient = AsyncMongoClient(mongo_url)
    coll = client[db]["models"]
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
        for i in range(count)
    ]
    for start in range(0, count, 1000):
        await coll.insert_many(docs[start : start + 1000])
    await client.close()


WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local i = (counter * 7919) %% %d
  return wrk.format("GET", "/model/meta?model_name=m" .. i .. "&model_version=v1")
end
"""


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not match:
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk_load(url: str, concurrency: int, seconds: int, script: Path | None) -> LoadResult:
    threads = min(2, concurrency)
    # --timeout: a slow store (FerretDB scans every document per query) must not turn latency into errors.
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "120s", "--latency"]
    if script:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=False).stdout
    rps_match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50_match, p99_match = re.search(r"50%\s+(\S+)", out), re.search(r"99%\s+(\S+)", out)
    rps = float(rps_match.group(1)) if rps_match else 0.0
    # With very few completed requests wrk prints no distribution: report NaN, not a crash.
    p50 = _ms(p50_match.group(1)) if p50_match else float("nan")
    p99 = _ms(p99_match.group(1)) if p99_match else float("nan")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"timeout (\d+)", out))
    return LoadResult(rps, p50, p99, errors)


def httpx_load(url: str, concurrency: int, seconds: int, models: int) -> LoadResult:
    """Fallback load generator, in its own process so it does not share the API's CPU time slices."""
    code = f"""
import asyncio, json, time, httpx
async def main():
    lat, errors, stop = [], 0, time.monotonic() + {seconds}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections={concurrency})) as c:
        async def worker(w):
            nonlocal errors
            i = w
            while time.monotonic() < stop:
                i += 7919
                u = {url!r}.replace("MODEL", f"m{{i % {models}}}")
                t = time.perf_counter(); r = await c.get(u); lat.append(time.perf_counter() - t)
                errors += r.status_code >= 300
        await asyncio.gather(*(worker(w) for w in range({concurrency})))
    lat.sort()
    print(json.dumps([len(lat) / {seconds}, lat[len(lat)//2]*1000, lat[int(len(lat)*0.99)]*1000, errors]))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rps, p50, p99, errors = json.loads(out)
    return LoadResult(rps, p50, p99, errors)


def drain(bases: list[str], limit: float) -> None:
    """Wait until both apps answer a metadata query twice in a row about as fast as when idle.

    Queries the load generator abandoned at the end of a run keep both the apps and the store busy
    for a while; the next run must not pay for them."""
    deadline = time.monotonic() + 12 * limit
    times: list[float] = []
    while time.monotonic() < deadline:
        started = time.perf_counter()
        for base in bases:
            httpx.get(f"{base}/model/meta", params={"model_name": "m0", "model_version": "v1"}, timeout=300)
        times.append(time.perf_counter() - started)
        if len(times) >= 3 and times[-1] < 1.3 * min(times) and times[-2] < 1.3 * min(times):
            return
        time.sleep(0.2)


def metadata(api: str, minimal: str, models: int, seconds: int, levels: list[int], tmp: Path) -> list[dict[str, Any]]:
    use_wrk = shutil.which("wrk") is not None
    script = tmp / "meta.lua"
    script.write_text(WRK_SCRIPT % models)
    rows = []
    for endpoint in ("meta", "list"):
        for n, level in enumerate(levels):
            results = {}
            pair = [("api", api), ("minimal", minimal)]
            # Alternate who goes first, and let the store drain the queries that the load
            # generator abandoned at the end of the previous run: otherwise the second app of a
            # pair pays for the first one's backlog.
            for label, base in pair if n % 2 == 0 else pair[::-1]:
                drain([api, minimal], seconds)
                if endpoint == "meta":
                    url = f"{base}/model/meta"
                    if use_wrk:
                        res = wrk_load(url, level, seconds, script)
                    else:
                        res = httpx_load(f"{url}?model_name=MODEL&model_version=v1", level, seconds, models)
                else:
                    url = f"{base}/model?limit=100"
                    res = wrk_load(url, level, seconds, None) if use_wrk else httpx_load(url, level, seconds, models)
                results[label] = res
            rows.append({"endpoint": endpoint, "concurrency": level, **results})
    return rows


# --- report -----------------------------------------------------------------------------------


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


def federated(mongo_url: str, tmp: Path, rounds: int, clients: int, repeats: int) -> dict[str, float]:
    """Wall time of a FedAvg task through the repository vs. the same training with bare Flower."""
    import secrets as _secrets

    from flrepo.client import RepositoryClient
    from flrepo.fl.catalogue import seed
    from flrepo.fl.demo import digits_task, fl_env, register_model, start_training
    from flrepo.signing import Keyring

    repo_times, bare_times = [], []
    env_db = {"FLREPO_DB_NAME": "fl", "FLREPO_GRIDFS_DB_NAME": "fl_grid", "FLREPO_LOG_LEVEL": "ERROR"}
    with api_server(tmp, mongo_url, **env_db) as (url, _):
        key = _secrets.token_hex(16)
        repo = RepositoryClient(url, keyring=Keyring("bench", {"bench": key.encode()}))
        seed(repo)
        register_model(repo, "digits", "v1")
        env = {**fl_env(url, key), "FLREPO_SIGNING_KEY_ID": "bench"}
        env_bare = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "GRPC_VERBOSITY": "ERROR"}
        bare = [sys.executable, "-m", "flrepo.fl.bare"]
        for i in range(repeats):
            # Alternate the two so drift in the machine's speed hits both alike.
            started = time.monotonic()
            repo.create_task(digits_task(f"bench-{i}", "fedavg", rounds, clients))
            collector, workers = start_training(url, f"bench-{i}", clients, env, tmp)
            for proc in [collector, *workers]:
                proc.wait(300)
            if repo.get_task(f"bench-{i}").phase != "Succeeded":
                raise RuntimeError(f"repository task bench-{i} did not succeed; logs in {tmp}")
            repo_times.append(time.monotonic() - started)

            started = time.monotonic()
            address = f"127.0.0.1:{free_port()}"
            with open(tmp / "bare.log", "ab") as log:
                procs = [
                    subprocess.Popen(
                        [*bare, "server", address, str(rounds), str(clients)],
                        env=env_bare,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                ]
                procs += [
                    subprocess.Popen(
                        [*bare, "client", address, f"{k}/{clients}"], env=env_bare, stdout=log, stderr=subprocess.STDOUT
                    )
                    for k in range(1, clients + 1)
                ]
                for proc in procs:
                    proc.wait(300)
            bare_times.append(time.monotonic() - started)
        repo.close()
    repo_time, bare_time = min(repo_times), min(bare_times)
    return {
        "rounds": rounds,
        "clients": clients,
        "repo_s": repo_time,
        "bare_s": bare_time,
        "ratio": repo_time / bare_time,
        "repeats": repeats,
    }


def report(
    mode: str,
    info: dict[str, str],
    tp: list[dict[str, Any]],
    mem: dict[str, float],
    meta: list[dict[str, Any]],
    fed: dict[str, float],
) -> str:
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
        f"Through the repository (task creation, signed strategy and model download, transformations, status "
        f"reports, result upload): {fed['repo_s']:.2f} s. Bare Flower, same strategy, clients and data: "
        f"{fed['bare_s']:.2f} s. **Ratio {fed['ratio']:.2f}** (best of {fed['repeats']:.0f}; goal ≤ 1.15).",
        "",
    ]
    return "\n".join(lines)


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
    print(text)
    if args.out:
        previous = args.out.read_text() if args.out.exists() else "# Benchmark results\n\nNewest run first.\n\n"
        head, _, rest = previous.partition("\n## ")
        args.out.write_text(head.rstrip() + "\n\n" + text + ("\n## " + rest if rest else ""))
    return 0


def wait_ready_minimal(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/model", params={"limit": 1}, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("minimal app did not start")


if __name__ == "__main__":
    sys.exit(main())
