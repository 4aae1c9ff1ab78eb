"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pymongo.errors import PyMongoError

from flrepo.schemas import Health
from flrepo.server.deps import problems

router = APIRouter(tags=["service"])
log = logging.getLogger(__name__)


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is alive (does not touch the database)."""
    return Health(status="ok")


@router.get("/ready", response_model=Health, responses=problems())
async def ready(request: Request) -> Health | JSONResponse:
    """The database answers and every unique index exists (missing ones are re-created first); 503 otherwise."""
    try:
        await request.app.state.db.ping()
        unindexed = await request.app.state.db.check_indexes()
    except PyMongoError as exc:
        log.warning("not ready: %s", exc)
        return JSONResponse({"detail": "database unavailable"}, status_code=503)
    if unindexed:
        detail = (
            f"no unique index on {', '.join(unindexed)}: they hold a key more than once "
            "(`flrepo migrate` lists them; resolve them by hand)"
        )
        log.warning("not ready: %s", detail)
        return JSONResponse({"detail": detail}, status_code=503)
    return Health(status="ready")
