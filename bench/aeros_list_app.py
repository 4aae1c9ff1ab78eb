"""aerOS 1.1.0's `GET /model`, for `bench/store_compare.py` to time beside flrepo's on the same store.

aerOS 1.1.0 (github.com/assist-iot/fl_repository, commit 7453ec5 "FL Repository release 1.1.0",
application/main.py) answers it with one plain find through a synchronous PyMongo client, inside an
`async def`, and returns the list:

    @app.get("/model")
    async def get_model_list(trained: Optional[bool] = None):
        database = app.client.repository
        collection = database.models
        models = collection.find({}, {'_id': 0})
        ...
        return list(models)

This is that handler, unchanged but for where the client comes from (FLREPO_MONGODB_URL). aerOS pins
FastAPI 0.83 and pydantic 1; this runs under flrepo's FastAPI, which serialises the same list.

Run with: FLREPO_MONGODB_URL=... uvicorn bench.aeros_list_app:app
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from pymongo import MongoClient

app = FastAPI()
client: MongoClient = MongoClient(os.environ["FLREPO_MONGODB_URL"])


@app.get("/model")
async def get_model_list(trained: bool | None = None) -> Any:
    database = client[os.environ.get("FLREPO_DB_NAME", "repository")]
    collection = database.models
    models = collection.find({}, {"_id": 0})
    return list(models)
