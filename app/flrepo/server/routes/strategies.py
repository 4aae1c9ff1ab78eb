"""FL aggregation strategies: metadata in `strategies`, the serialized strategy in GridFS.

The service stores the bytes and never unpickles them; only clients that verify a signature do.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from flrepo.schemas import StrategyIn, StrategyMetaIn, StrategyOut
from flrepo.schemas.identifiers import Identifier
from flrepo.server.deps import DB, FILE_RESPONSE, Page, SettingsDep, listed, problems
from flrepo.server.http.conditions import UploadCondition
from flrepo.server.http.downloads import file_response
from flrepo.server.http.file_uploads import UPLOAD_OPENAPI, receiver, upload_responses, uploaded
from flrepo.server.http.json_body import JsonBodyRoute
from flrepo.server.repository import items
from flrepo.server.repository.kinds import STRATEGIES

router = APIRouter(tags=["strategies"], route_class=JsonBodyRoute)

Name = Annotated[Identifier, Path(description="Strategy name")]


def _key(name: str) -> dict[str, Any]:
    return {"strategy_name": name}


@router.post("/strategy", status_code=201, response_model=StrategyOut, responses=problems(409))
async def create_strategy(body: StrategyIn, db: DB) -> dict[str, Any]:
    """Create an aggregation strategy's metadata."""
    return await items.create(db, STRATEGIES, body.model_dump())


@router.put("/strategy/meta/{strategy_name}", status_code=204, responses=problems(404))
async def update_strategy_meta(strategy_name: Name, body: StrategyMetaIn, db: DB) -> Response:
    """Replace the strategy's `meta` (and its description, when given)."""
    await items.update(db, STRATEGIES, _key(strategy_name), body.model_dump(exclude_unset=True))
    return Response(status_code=204)


@router.put("/strategy/{strategy_name}", status_code=204, responses=upload_responses(), openapi_extra=UPLOAD_OPENAPI)
async def upload_strategy(
    strategy_name: Name, request: Request, db: DB, settings: SettingsDep, condition: UploadCondition
) -> Response:
    """Create or replace the strategy's file."""
    limit = settings.max_upload_bytes
    stored = await items.attach(
        db, STRATEGIES, _key(strategy_name), receiver(request, limit), limit, condition=condition
    )
    return uploaded(stored)


@router.get("/strategy", response_model=list[StrategyOut], responses=problems())
async def list_strategies(db: DB, page: Page, response: Response) -> list[dict[str, Any]]:
    """All strategies (`X-Total-Count` holds the total)."""
    return listed(response, await items.page(db, STRATEGIES, query={}, limit=page.limit, offset=page.offset))


@router.get("/strategy/meta/{strategy_name}", response_model=StrategyOut, responses=problems(404))
async def get_strategy_meta(strategy_name: Name, db: DB) -> dict[str, Any]:
    """One strategy's metadata (GET /strategy/{name} is the file, as in aerOS)."""
    return await items.get(db, STRATEGIES, _key(strategy_name))


@router.get(
    "/strategy/{strategy_name}",
    response_class=Response,
    responses={**FILE_RESPONSE, **problems(404, 416)},
)
@router.head("/strategy/{strategy_name}", response_class=Response, include_in_schema=False)
async def download_strategy(strategy_name: Name, request: Request, db: DB) -> Response:
    """The strategy's file, streamed."""
    return file_response(request, await items.open_file(db, STRATEGIES, _key(strategy_name)))


@router.delete("/strategy/{strategy_name}", status_code=204, responses=problems(404))
async def delete_strategy(strategy_name: Name, db: DB) -> Response:
    """Delete a strategy and its file."""
    await items.delete(db, STRATEGIES, _key(strategy_name))
    return Response(status_code=204)
