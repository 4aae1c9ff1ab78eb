"""The audit trail: who changed what, when. Written by the request middleware, read by admins."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel
from pymongo.errors import PyMongoError

from flrepo.server.auth import require_admin
from flrepo.server.deps import DB, Page, problems
from flrepo.server.storage.db import Database

router = APIRouter(tags=["service"])
log = logging.getLogger(__name__)


class AuditEntry(BaseModel):
    time: datetime
    key_id: str | None = None
    role: str | None = None
    method: str
    path: str
    route: str
    status: int
    request_id: str


def audit_writer(app: Any) -> Any:
    async def write(entry: dict[str, Any]) -> None:
        db: Database | None = getattr(app.state, "db", None)
        if db is None:
            return
        try:
            await db.meta["audit"].insert_one(entry)
        except PyMongoError as exc:
            # The change itself succeeded; losing its audit line must not turn it into an error.
            log.error("could not write the audit record of %s %s: %s", entry["method"], entry["path"], exc)

    return write


@router.get(
    "/audit",
    response_model=list[AuditEntry],
    dependencies=[Depends(require_admin)],
    responses=problems(401, 403),
)
async def list_audit(
    request: Request,
    db: DB,
    page: Page,
    response: Response,
    key_id: Annotated[str | None, Query(max_length=256)] = None,
    since: Annotated[datetime | None, Query(description="Only entries at or after this time")] = None,
) -> list[dict[str, Any]]:
    """Mutations, newest first (admin only)."""
    query: dict[str, Any] = {}
    if key_id:
        query["key_id"] = key_id
    if since:
        query["time"] = {"$gte": since}
    coll = db.meta["audit"]
    response.headers["X-Total-Count"] = str(await coll.count_documents(query))
    cursor = coll.find(query, {"_id": 0}).sort([("time", -1)]).skip(page.offset).limit(page.limit)
    return await cursor.to_list()
