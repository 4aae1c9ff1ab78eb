"""The baseline for the metadata benchmark: the same queries with the same driver, nothing else.

Run with: FLREPO_MONGODB_URL=... uvicorn bench.minimal_app:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pymongo import AsyncMongoClient


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    client: AsyncMongoClient = AsyncMongoClient(os.environ["FLREPO_MONGODB_URL"], tz_aware=True)
    app.state.models = client[os.environ.get("FLREPO_DB_NAME", "repository")]["models"]
    yield
    await client.close()


app = FastAPI(lifespan=lifespan)


@app.get("/model/meta")
async def model_meta(model_name: str, model_version: str) -> dict[str, Any]:
    doc = await app.state.models.find_one({"model_name": model_name, "model_version": model_version}, {"_id": 0})
    if doc is None:
        raise HTTPException(404)
    return doc


@app.get("/model")
async def models(limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    return await app.state.models.find({}, {"_id": 0}).sort([("_id", 1)]).skip(offset).limit(limit).to_list()
