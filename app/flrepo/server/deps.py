"""Dependencies shared by the routers: the database, the settings, list paging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Response

from flrepo.schemas import Problem
from flrepo.server.repository.items import Page as ItemPage
from flrepo.server.settings import Settings
from flrepo.server.storage.db import Database

# The dependencies here are `async def` although they never wait: FastAPI runs a plain `def` dependency in
# its thread pool, a thread hop per dependency per request (two on `GET /model`: each a context switch,
# and under load a wait for a free thread).


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    # No-op once done; creates the unique indexes after a start with the database down.
    await db.ensure_indexes()
    return db


@dataclass
class Paging:
    limit: int
    offset: int


async def get_paging(
    settings: Annotated[Settings, Depends(get_settings)],
    limit: Annotated[
        int | None, Query(ge=1, description="Most items to return (default and maximum: the list cap).")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=2**31, description="Items to skip.")] = 0,
) -> Paging:
    if limit is not None and limit > settings.list_cap:
        raise HTTPException(422, f"limit must be at most {settings.list_cap}")
    return Paging(limit=limit or settings.list_cap, offset=offset)


def listed(response: Response, page: ItemPage) -> list[dict[str, Any]]:
    """A page's items as the body; its total in `X-Total-Count`."""
    response.headers.update(listed_headers(page))
    return page.items


def listed_headers(page: ItemPage) -> dict[str, str]:
    """The headers of a page's answer: its total in `X-Total-Count`."""
    return {"X-Total-Count": str(page.total)}


DB = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Page = Annotated[Paging, Depends(get_paging)]

_PROBLEMS = {
    401: "Missing or invalid API key",
    403: "The API key's role does not allow this",
    404: "No such item",
    409: "Conflict with an existing item",
    412: "Precondition failed (If-Match / If-None-Match on the current file)",
    413: "File or body too large",
    416: "Range not satisfiable",
    422: "Invalid input",
    429: "Too many open resumable uploads for this API key",
    503: "Database unavailable",
    507: "The API key's open resumable uploads would reserve too many bytes",
}
# One example body per status, as the service writes them.
_EXAMPLES: dict[int, Any] = {
    401: "missing or invalid API key",
    403: "this API key's role (reader) does not allow PUT",
    404: "model model_name='cnn', model_version='v1' not found",
    409: "model model_name='cnn', model_version='v1' already exists",
    412: "the precondition on the file of model model_name='cnn', model_version='v1' failed: it has no file",
    413: "the file is larger than the 10737418240-byte limit",
    416: "range not satisfiable: the file has 1024 bytes",
    422: [
        {
            "type": "string_too_long",
            "loc": ["body", "model_name"],
            "msg": "String should have at most 128 characters",
            "input": "…",
        }
    ],
    503: "database unavailable, try again later",
    429: "API key 'writer-1' has 16 open uploads, the most it may (FLREPO_UPLOAD_MAX_OPEN); ...",
    507: "API key 'writer-1': its open uploads announce 34359738368 bytes; ...",
}


# What the body limit answers (flrepo.server.middleware.body_limit) on any route that reads a JSON body.
BODY_TOO_LARGE_EXAMPLE = "request body larger than 1048576 bytes"


def problem_document(code: int, example: Any) -> dict[str, Any]:
    """One error answer as it appears in the OpenAPI document (for entries added after generation)."""
    return {
        "description": _PROBLEMS[code],
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Problem"}, "example": {"detail": example}}
        },
    }


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give (always 422 and 503), each with an example."""
    return {
        code: {
            "model": Problem,
            "description": _PROBLEMS[code],
            "content": {"application/json": {"example": {"detail": _EXAMPLES[code]}}},
        }
        for code in sorted({*codes, 422, 503})
    }


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_FILE_HEADERS = {
    "ETag": _header('The file\'s sha256, quoted: `"<sha256>"` (absent for files stored without one)'),
    "Accept-Ranges": _header("`bytes`: a single Range is served", {"type": "string", "enum": ["bytes"]}),
    "Content-Length": _header("Bytes in this answer's body", {"type": "integer", "minimum": 0}),
    "Content-Disposition": _header("`attachment` with the file's name (RFC 6266)"),
}
FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file, streamed", "headers": _FILE_HEADERS, "content": _BINARY},
    206: {
        "description": "Part of the file (Range)",
        "headers": {**_FILE_HEADERS, "Content-Range": _header("`bytes first-last/size`")},
        "content": _BINARY,
    },
    304: {
        "description": "Not modified: If-None-Match names the current file",
        "headers": {"ETag": _FILE_HEADERS["ETag"]},
    },
}
