"""3. Metadata: GET /model/meta and GET /model?limit=100 vs. a minimal FastAPI app with the same
driver calls, at several concurrencies (wrk when installed, else an httpx load process)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient


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
