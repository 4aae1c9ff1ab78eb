"""What only models have: the trained/untrained filter and the list of models that have a file."""

from __future__ import annotations

from typing import Any

from flrepo.server.repository import items
from flrepo.server.repository.items import NO_ID, Page
from flrepo.server.repository.kinds import MODELS, RESULTS
from flrepo.server.storage.db import Database

AVAILABLE: dict[str, Any] = {MODELS.id_field: {"$ne": None}}
NEWEST_UPLOAD_FIRST = [("uploaded_at", -1)]


async def page(db: Database, *, trained: bool | None, limit: int, offset: int) -> Page:
    """Models, optionally only those with (True) or without (False) training results."""
    query: dict[str, Any] = {}
    if trained is not None:
        # One aggregation finds every trained (name, version) pair, instead of a query per model.
        cursor = await db.collection(RESULTS.collection).aggregate(
            [{"$group": {"_id": {"model_name": "$model_name", "model_version": "$model_version"}}}]
        )
        pairs = [row["_id"] for row in await cursor.to_list()]
        if trained:
            query = {"$or": pairs} if pairs else {"_id": {"$in": []}}
        elif pairs:
            query = {"$nor": pairs}
    return await items.page(db, MODELS, query=query, limit=limit, offset=offset)


async def page_available(db: Database, *, limit: int, offset: int) -> Page:
    """Models that have a file, newest upload first."""
    return await items.page(db, MODELS, query=AVAILABLE, limit=limit, offset=offset, sort=NEWEST_UPLOAD_FIRST)


async def all_available(db: Database) -> list[dict[str, Any]]:
    """Every model that has a file, newest upload first (for the all-models archive)."""
    return await db.collection(MODELS.collection).find(AVAILABLE, NO_ID).sort(NEWEST_UPLOAD_FIRST).to_list()
