"""Small helpers shared by the API tests."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import httpx

CHUNK = 255 * 1024  # GridFS default chunk size


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int) -> bytes:
    return os.urandom(size)


async def make_model(
    client: httpx.AsyncClient, name: str = "m", version: str = "v1", library: str = "keras", **meta: Any
) -> dict[str, Any]:
    r = await client.post(
        "/model", json={"model_name": name, "model_version": version, "meta": {"library": library, **meta}}
    )
    assert r.status_code == 201, r.text
    return r.json()


async def upload(client: httpx.AsyncClient, path: str, data: bytes, filename: str = "file.bin") -> httpx.Response:
    return await client.put(path, files={"file": (filename, data, "application/octet-stream")})


def grid_counts(raw_db: tuple[Any, Any]) -> tuple[int, int]:
    """(files, chunks) in the test's GridFS bucket."""
    grid = raw_db[1]
    return grid["fs.files"].count_documents({}), grid["fs.chunks"].count_documents({})
