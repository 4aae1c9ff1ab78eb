"""Training collectors: registrations in `collectors` (aerOS 1.1.0's `POST /collector`), no file."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from flrepo.schemas import CollectorIn, CollectorOut
from flrepo.schemas.identifiers import Identifier
from flrepo.server.deps import DB, Page, listed, problems
from flrepo.server.http.json_body import JsonBodyRoute
from flrepo.server.repository import items
from flrepo.server.repository.kinds import COLLECTORS

router = APIRouter(tags=["collectors"], route_class=JsonBodyRoute)

Name = Annotated[Identifier, Path(description="Collector name")]
Version = Annotated[int, Path(ge=0, le=2**53 - 1, description="Collector version")]


def _key(name: str, version: int) -> dict[str, Any]:
    return {"name": name, "version": version}


@router.post("/collector", status_code=201, response_model=CollectorOut, responses=problems(409))
async def create_collector(body: CollectorIn, db: DB) -> dict[str, Any]:
    """Register a training collector (409 when the name and version are taken; aerOS answered 400)."""
    return await items.create(db, COLLECTORS, body.model_dump())


@router.get("/collector", response_model=list[CollectorOut], responses=problems())
async def list_collectors(db: DB, page: Page, response: Response) -> list[dict[str, Any]]:
    """All registered collectors (`X-Total-Count` holds the total)."""
    return listed(response, await items.page(db, COLLECTORS, query={}, limit=page.limit, offset=page.offset))


@router.get("/collector/{name}/{version}", response_model=CollectorOut, responses=problems(404))
async def get_collector(name: Name, version: Version, db: DB) -> dict[str, Any]:
    """One collector."""
    return await items.get(db, COLLECTORS, _key(name, version))


@router.delete("/collector/{name}/{version}", status_code=204, responses=problems(404))
async def delete_collector(name: Name, version: Version, db: DB) -> Response:
    """Remove a collector's registration."""
    await items.delete(db, COLLECTORS, _key(name, version))
    return Response(status_code=204)
