"""SDK transfer overhead: RepositoryClient / AsyncRepositoryClient against plain httpx streaming.

The SDK adds work on the client side (sha256 of every byte, a .part file with fsync and rename,
worker threads for file I/O in the async client); this prints how much of the raw HTTP rate it
keeps, and how much the client process's peak memory grows while files far larger than that move.
Goals: ratio >= 0.8 both ways, growth <= 16 MiB. Usage: `python bench/sdk.py [--mib 64] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from flrepo.client import AsyncRepositoryClient, RepositoryClient
from flrepo.server.embedded import api_server

log = logging.getLogger("bench.sdk")
MIB = 1024 * 1024


def _raw_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            yield chunk


def raw_up(base: str, path: Path) -> None:
    headers = {"content-type": "application/octet-stream", "content-length": str(path.stat().st_size)}
    httpx.put(f"{base}/model/b/v1", content=_raw_chunks(path), headers=headers, timeout=600).raise_for_status()


def raw_down(base: str, dest: Path) -> None:
    with httpx.stream("GET", f"{base}/model/b/v1", timeout=600) as response, dest.open("wb") as out:
        response.raise_for_status()
        for chunk in response.iter_bytes(MIB):
            out.write(chunk)


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="flrepo-sdk-bench-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "src.bin"
        with source.open("wb") as out:  # in pieces: the file must never be whole in this process
            for _ in range(args.mib):
                out.write(os.urandom(MIB))
        with api_server(tmp, FLREPO_LOG_LEVEL="ERROR") as (base, _), RepositoryClient(base) as repo:
            repo.create_model("b", "v1", library="bench")
            # Every measured upload is then a replacement (the server also deletes the old file).
            repo.upload_model("b", "v1", source)
            peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            size = args.mib

            async def async_up() -> None:
                async with AsyncRepositoryClient(base) as client:
                    await client.upload_model("b", "v1", source)

            async def async_down() -> None:
                async with AsyncRepositoryClient(base) as client:
                    await client.download_model("b", "v1", tmp / "a.bin", resume=False)

            rows = {
                "upload": (
                    best(lambda: raw_up(base, source), args.repeats),
                    best(lambda: repo.upload_model("b", "v1", source), args.repeats),
                    best(lambda: asyncio.run(async_up()), args.repeats),
                ),
                "download": (
                    best(lambda: raw_down(base, tmp / "r.bin"), args.repeats),
                    best(lambda: repo.download_model("b", "v1", tmp / "s.bin", resume=False), args.repeats),
                    best(lambda: asyncio.run(async_down()), args.repeats),
                ),
            }
            growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak_before
            assert _sha(tmp / "s.bin") == _sha(source) == _sha(tmp / "a.bin")
    log.info("SDK vs plain httpx, %d MiB, best of %d (MB/s; ratio = SDK / httpx; goal >= 0.8)", size, args.repeats)
    log.info("| direction | httpx | sync SDK | ratio | async SDK | ratio |")
    log.info("|---|---:|---:|---:|---:|---:|")
    for direction, (raw, sync, aio) in rows.items():
        log.info(
            "| %s | %.1f | %.1f | **%.2f** | %.1f | **%.2f** |",
            direction,
            size / raw,
            size / sync,
            raw / sync,
            size / aio,
            raw / aio,
        )
    log.info("client peak RSS growth during all transfers: %.1f MiB (goal <= 16 MiB)", growth)
    return 0


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    raise SystemExit(main())
