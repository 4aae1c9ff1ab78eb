"""The FastAPI application: `create_app(settings)`; the lifespan opens and closes the database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import PyMongoError

from flrepo import __version__
from flrepo.server import errors, openapi
from flrepo.server.auth import KeyStore, authorize
from flrepo.server.deps import problems
from flrepo.server.metrics import Metrics
from flrepo.server.middleware.audit import AuditTrail
from flrepo.server.middleware.body_limit import BodyLimit
from flrepo.server.middleware.request_context import RequestContext
from flrepo.server.middleware.trailing_slash import TrailingSlash
from flrepo.server.repository import audit as audit_trail
from flrepo.server.repository.liveness import watch_tasks_forever
from flrepo.server.routes import (
    audit,
    checkpoints,
    collectors,
    health,
    models,
    signatures,
    strategies,
    tasks,
    training_results,
    transformations,
    tus_uploads,
    whoami,
)
from flrepo.server.settings import Settings, get_settings
from flrepo.server.storage.db import Database, watch_indexes_forever
from flrepo.server.storage.sweep import sweep_forever
from flrepo.server.ui import install as install_console

log = logging.getLogger(__name__)

# What browsers' tus clients (tus-js-client) send and read across origins.
TUS_REQUEST = ["Tus-Resumable", "Upload-Length", "Upload-Metadata", "Upload-Offset", "Upload-Checksum"]
TUS_RESPONSE = [
    "Location",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Expires",
]

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
    {"name": "collectors", "description": "Training collectors registered by name and version (aerOS `/collector`)."},
    {
        "name": "uploads",
        "description": "Resumable uploads (tus 1.0: core, creation, termination, checksum, expiration) of any file "
        "an upload path takes; `Upload-Metadata` names its `target`, e.g. /model/NAME/VERSION.",
    },
    {"name": "service", "description": "Health and readiness; who the caller is; signature states."},
]


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Opens the database (indexes once it answers), runs the background jobs, closes both at the end."""

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
        # The sweep is nobody's request: its own handle, without the per-reply bound (deleting a large
        # chunk set may take longer than a request may wait).
        sweep_db = Database.connect(settings, bounded=False) if settings.sweep_interval_s > 0 else None
        background = _background_jobs(settings, db, sweep_db)
        try:
            yield
        finally:
            for job in background:
                await _stop(job)
            if sweep_db is not None:
                await sweep_db.close()
            await db.close()

    return lifespan


async def _stop(job: asyncio.Task[None]) -> None:
    """Cancel a background job and wait for it to end. A cancel that lands inside the driver's first
    operation (while it connects) can be swallowed there, and the job then goes on to its next sleep:
    cancel again until it ends, or the service would never finish shutting down."""
    while not job.done():
        job.cancel()
        await asyncio.wait({job}, timeout=0.1)
    with suppress(asyncio.CancelledError):
        await job


def _background_jobs(settings: Settings, db: Database, sweep_db: Database | None) -> list[asyncio.Task[None]]:
    """The orphan sweep, the index check and the task watch, as settings ask."""
    jobs = []
    if sweep_db is not None:
        grace = timedelta(seconds=settings.sweep_grace_s)
        jobs.append(asyncio.create_task(sweep_forever(sweep_db, settings.sweep_interval_s, grace)))
    if settings.index_check_interval_s > 0:
        # Indexes lost under the running service (a collection dropped and restored) come back.
        jobs.append(asyncio.create_task(watch_indexes_forever(db, settings.index_check_interval_s)))
    if settings.task_check_interval_s > 0:
        # Beside the sweep: fails Running tasks whose collector stopped heartbeating.
        jobs.append(asyncio.create_task(watch_tasks_forever(db, settings.task_check_interval_s)))
    return jobs


def _routes(app: FastAPI, settings: Settings) -> None:
    """Every router, behind its authorization, and /metrics."""
    for module in (
        models,
        training_results,
        strategies,
        transformations,
        tasks,
        checkpoints,
        collectors,
        signatures,
        whoami,
    ):
        app.include_router(module.router, dependencies=[Depends(authorize)], responses=problems(401, 403))
    # Authorized per route: OPTIONS (capabilities) is public, the rest need the role of the target's PUT.
    app.include_router(tus_uploads.router)
    app.include_router(audit.router)
    app.include_router(health.router)
    install_console(app)  # the web console at /ui (its page needs no key; the API calls it makes do)

    # Request counts by route and status reveal how the service is used: a reader key, unless the
    # deployment says its scraper cannot send one (FLREPO_METRICS_PUBLIC=true).
    metrics_guard = [] if settings.metrics_public else [Depends(authorize)]

    # HEAD too: uptime checkers and load balancers probe with it.
    @app.api_route("/metrics", methods=["GET", "HEAD"], include_in_schema=False, dependencies=metrics_guard)
    async def metrics(request: Request) -> Response:
        if request.method == "HEAD":
            return Response(media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _middleware(app: FastAPI, settings: Settings) -> None:
    """CORS when configured, then the layers every request passes (the last added runs first)."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "Range",
                "X-Request-ID",
                "X-Filename",
                *TUS_REQUEST,
            ],
            expose_headers=[
                "X-Total-Count",
                "X-Request-ID",
                "ETag",
                "Content-Range",
                "Content-Disposition",
                *TUS_RESPONSE,
            ],
        )

    async def record(entry: dict[str, Any]) -> None:
        db: Database | None = getattr(app.state, "db", None)
        if db is not None:
            await audit_trail.record(db, entry)

    # add_middleware wraps: the last added runs first (RequestContext, then BodyLimit, then AuditTrail).
    app.add_middleware(AuditTrail, record=record)
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        RequestContext,
        metrics=app.state.metrics,
        max_headers=settings.max_headers,
        max_header_bytes=settings.max_header_bytes,
    )
    app.add_middleware(TrailingSlash)  # outermost: every layer sees the path as routed


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # FastAPIOffline serves Swagger UI and ReDoc assets from the package, not a CDN.
    app = FastAPIOffline(
        title="flrepo — FL Repository",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=_lifespan(settings),
        # `/model/` → 307 to `http://{Host header}/model` built redirects from what the client sent;
        # TrailingSlash serves such paths in place instead.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.keys = KeyStore.from_settings(settings.api_keys_file, settings.anonymous_role)
    app.state.metrics = Metrics.create()
    errors.install(app)
    openapi.install(app)
    _routes(app, settings)
    _middleware(app, settings)
    return app
