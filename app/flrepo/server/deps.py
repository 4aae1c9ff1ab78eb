"""Dependencies shared by the routers: the database, the settings, list paging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Response

from flrepo.schemas import Problem
from flrepo.server.repository.items import Page as ItemPage
from flrepo.server.settings import Settings
from flrepo.server.storage.db import Database


def get_settings(request: Request) -> Settings:
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


def get_paging(
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
    response.headers["X-Total-Count"] = str(page.total)
    return page.items


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
    503: "Database unavailable",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give (always 422 and 503)."""
    return {code: {"model": Problem, "description": _PROBLEMS[code]} for code in sorted({*codes, 422, 503})}


FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file, streamed",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    206: {
        "description": "Part of the file (Range)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}
