"""Exception handlers: every error is JSON `{"detail": ...}` with the status that fits it.

The one place where the store's own errors (flrepo.server.storage.errors) and the driver's become
HTTP statuses."""

from __future__ import annotations

import logging
import math
from typing import Any

from bson.errors import InvalidDocument
from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, DocumentTooLarge, DuplicateKeyError, OperationFailure, PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from flrepo.server.storage import errors as store_errors

log = logging.getLogger(__name__)

STATUS_OF: dict[type[store_errors.StoreError], int] = {
    store_errors.Forbidden: 403,
    store_errors.QuotaExceeded: 429,
    store_errors.InsufficientStorage: 507,
    store_errors.NotFound: 404,
    store_errors.AlreadyExists: 409,
    store_errors.Conflict: 409,
    store_errors.PreconditionFailed: 412,
    store_errors.TooLarge: 413,
    store_errors.Invalid: 422,
    store_errors.Busy: 503,
    store_errors.Locked: 423,
    # tus 1.0 checksum extension: "460 Checksum Mismatch".
    store_errors.ChecksumMismatch: 460,
}

BAD_VALUE = 2  # MongoDB error code
# What the metrics and the access log record for a request whose client went away before the answer
# (nginx's convention): neither the client's fault nor ours, and no 5xx.
CLIENT_CLOSED = 499


def _count(request: Request, kind: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.db_errors.labels(kind).inc()


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, store_errors.StoreError)
    status = next((code for cls, code in STATUS_OF.items() if isinstance(exc, cls)), 500)
    return JSONResponse({"detail": exc.detail}, status_code=status)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    _count(request, "unavailable")
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "database unavailable, try again later"}, status_code=503)


async def _duplicate(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "an item with the same key already exists"}, status_code=409)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if getattr(exc, "timeout", False):
        # A bounded operation ran out of time (FLREPO_DB_TIMEOUT_MS): the database is not answering.
        return await _database_unavailable(request, exc)
    if isinstance(exc, OperationFailure) and exc.code == BAD_VALUE:
        # The store refused a value the request carried: the input is invalid, not the service.
        return JSONResponse(
            {"detail": f"the database refused a value: {(exc.details or {}).get('errmsg', '')}"[:500]}, 422
        )
    _count(request, "error")
    log.error("database error during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "database error"}, status_code=500)


async def _too_large_document(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"the item would exceed the database's document size limit ({exc})"[:500]}, 413)


async def _invalid_document(request: Request, exc: Exception) -> JSONResponse:
    # Raised by the driver before sending: a value BSON cannot encode.
    return JSONResponse({"detail": f"a value cannot be stored: {exc}"[:500]}, 422)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The upload's partial file was removed by the store; nobody is left to read an answer.
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED)


def printable(value: Any) -> Any:
    """`value` as JSON can carry it: lone surrogates escaped, non-finite floats as text (an error
    message echoes the input, and the input may hold anything)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": printable(jsonable_encoder(exc.errors()))}, status_code=422)


async def _overflow(request: Request, exc: Exception) -> JSONResponse:
    if "8-byte ints" in str(exc):
        # BSON's encoder refused an integer of the request beyond 64 bits (JSON has no such limit).
        return JSONResponse({"detail": "integers must fit in 64 bits (-2**63 .. 2**63-1)"}, status_code=422)
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error during %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and not getattr(exc, "protocol", False):
        # FastAPI answers 400 to a body it cannot decode; for this API that is invalid input.
        # (A protocol that prescribes 400, tus, marks its own errors `protocol`.)
        exc = StarletteHTTPException(422, f"invalid request body: {exc.detail}", headers=exc.headers)
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(store_errors.StoreError, _store_error)
    # Starlette picks the handler of the most specific class in the exception's MRO.
    app.add_exception_handler(ConnectionFailure, _database_unavailable)
    app.add_exception_handler(DuplicateKeyError, _duplicate)
    app.add_exception_handler(DocumentTooLarge, _too_large_document)
    app.add_exception_handler(InvalidDocument, _invalid_document)
    app.add_exception_handler(PyMongoError, _database_error)
    app.add_exception_handler(OverflowError, _overflow)
    app.add_exception_handler(Exception, _unexpected)
