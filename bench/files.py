"""1. File throughput through the API vs. the same bytes with AsyncGridFSBucket, and 2. the API
process's peak RSS over idle while a large file goes up and comes back."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from gridfs import AsyncGridFSBucket
from pymongo import AsyncMongoClient
from pymongo.errors import ProtocolError

from bench.common import BLOCK, MIB, NOTES, WRITE, chunks


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
