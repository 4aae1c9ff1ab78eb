"""The FastAPI application: `create_app(settings)`; the lifespan opens and closes the database."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from pymongo.errors import PyMongoError

from app import __version__, errors
from app.api import health, models, strategies, tasks, training_results, transformations
from app.api.deps import problems
from app.auth import KeyStore, authorize
from app.config import Settings, get_settings
from app.db import Database

log = logging.getLogger(__name__)

DESCRIPTION = """
The FL Repository stores the reusable parts of federated learning — ML models, training results,
aggregation strategies and data transformations — as MongoDB documents with their files in GridFS.
It speaks the aerOS / ASSIST-IoT FL Repository API, so existing training collectors and local
executions work unchanged.

Files upload as multipart field `file` (or a raw `application/octet-stream` body) and download
streamed with `Content-Length`, `ETag` (the SHA-256), `HEAD` and `Range` support.
Lists take `limit` and `offset` and report the total in `X-Total-Count`.
"""

TAGS = [
    {"name": "models", "description": "ML models: metadata and model files."},
    {"name": "training results", "description": "Outcomes of FL trainings and their final weights."},
    {"name": "strategies", "description": "FL aggregation strategies (serialized objects)."},
    {"name": "transformations", "description": "Data transformations used by local executions."},
    {"name": "tasks", "description": "FL training plans and the live status their training collector reports."},
    {"name": "service", "description": "Health and readiness."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.connect(settings)
        app.state.db = db
        try:
            await db.ensure_indexes()
        except PyMongoError as exc:
            # Start anyway: /health answers, /ready says 503, and the first request that reaches
            # the database creates the indexes once it is back.
            log.warning("database not reachable at start-up (%s); will retry on demand", exc)
        try:
            yield
        finally:
            await db.close()

    # FastAPIOffline serves Swagger UI and ReDoc assets from the package, not a CDN.
    app = FastAPIOffline(
        title="flrepo — FL Repository",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.keys = KeyStore.from_settings(settings.api_keys_file, settings.anonymous_role)
    errors.install(app)
    for module in (models, training_results, strategies, transformations, tasks):
        app.include_router(module.router, dependencies=[Depends(authorize)], responses=problems(401, 403))
    app.include_router(health.router)
    return app
