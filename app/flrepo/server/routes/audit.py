"""GET /audit: who changed what, when (admins only). The entries are written by the audit middleware."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from flrepo.server.auth import require_admin
from flrepo.server.deps import DB, Page, listed, problems
from flrepo.server.repository import audit

router = APIRouter(tags=["service"])


class AuditEntry(BaseModel):
    time: datetime
    key_id: str | None = None
    role: str | None = None
    method: str
    path: str
    route: str
    status: int
    request_id: str


@router.get(
    "/audit",
    response_model=list[AuditEntry],
    dependencies=[Depends(require_admin)],
    responses=problems(401, 403),
)
async def list_audit(
    db: DB,
    page: Page,
    response: Response,
    key_id: Annotated[str | None, Query(max_length=256)] = None,
    since: Annotated[datetime | None, Query(description="Only entries at or after this time")] = None,
) -> list[dict[str, Any]]:
    """Mutations, newest first (admin only)."""
    return listed(response, await audit.page(db, key_id=key_id, since=since, limit=page.limit, offset=page.offset))
