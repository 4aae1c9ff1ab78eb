"""The audit trail in the store: one entry per successful change, read back by admins."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pymongo.errors import PyMongoError

from flrepo.server.repository.items import NO_ID, Page
from flrepo.server.storage.db import Database

log = logging.getLogger(__name__)
COLLECTION = "audit"


async def record(db: Database, entry: dict[str, Any]) -> None:
    """Append an entry; a database error is logged, never raised (the change itself succeeded)."""
    try:
        await db.collection(COLLECTION).insert_one(dict(entry))
    except PyMongoError as exc:
        log.error("could not write the audit record of %s %s: %s", entry.get("method"), entry.get("path"), exc)


async def page(db: Database, *, key_id: str | None, since: datetime | None, limit: int, offset: int) -> Page:
    """Entries, newest first, optionally of one key and from a time on."""
    query: dict[str, Any] = {}
    if key_id:
        query["key_id"] = key_id
    if since:
        query["time"] = {"$gte": since}
    coll = db.collection(COLLECTION)
    total = await coll.count_documents(query)
    cursor = coll.find(query, NO_ID).sort([("time", -1)]).skip(offset).limit(limit)
    return Page(items=await cursor.to_list(), total=total)
