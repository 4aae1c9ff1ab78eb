"""Data transformations: aerOS metadata in `transformations`, the serialized object in GridFS."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response

from flrepo.schemas import TransformationIn, TransformationOut, TransformationUpdate
from flrepo.schemas.identifiers import Identifier
from flrepo.server.deps import DB, FILE_RESPONSE, Page, SettingsDep, listed, problems
from flrepo.server.http.conditions import UploadCondition
from flrepo.server.http.downloads import file_response
from flrepo.server.http.file_uploads import UPLOAD_OPENAPI, receiver, upload_responses, uploaded
from flrepo.server.http.json_body import JsonBodyRoute
from flrepo.server.repository import items
from flrepo.server.repository.kinds import TRANSFORMATIONS

router = APIRouter(tags=["transformations"], route_class=JsonBodyRoute)

TransformationId = Annotated[Identifier, Path(description="Transformation id")]


def _key(transformation_id: str) -> dict[str, Any]:
    return {"id": transformation_id}


@router.post("/transformation", status_code=201, response_model=TransformationOut, responses=problems(409))
async def create_transformation(body: TransformationIn, db: DB) -> dict[str, Any]:
    """Create a data transformation's metadata."""
    return await items.create(db, TRANSFORMATIONS, body.model_dump())


@router.put("/transformation/meta/{transformation_id}", status_code=204, responses=problems(404))
async def update_transformation_meta(
    transformation_id: TransformationId, body: TransformationUpdate, db: DB
) -> Response:
    """Replace the transformation's metadata; the id in the path is the key."""
    if body.id is not None and body.id != transformation_id:
        raise HTTPException(422, f"body id {body.id!r} differs from the path id {transformation_id!r}")
    await items.update(db, TRANSFORMATIONS, _key(transformation_id), body.model_dump(exclude={"id"}))
    return Response(status_code=204)


@router.put(
    "/transformation/{transformation_id}",
    status_code=204,
    responses=upload_responses(),
    openapi_extra=UPLOAD_OPENAPI,
)
async def upload_transformation(
    transformation_id: TransformationId, request: Request, db: DB, settings: SettingsDep, condition: UploadCondition
) -> Response:
    """Create or replace the transformation's file."""
    limit = settings.max_upload_bytes
    stored = await items.attach(
        db, TRANSFORMATIONS, _key(transformation_id), receiver(request, limit), limit, condition=condition
    )
    return uploaded(stored)


@router.get("/transformation", response_model=list[TransformationOut], responses=problems())
async def list_transformations(db: DB, page: Page, response: Response) -> list[dict[str, Any]]:
    """All data transformations (`X-Total-Count` holds the total)."""
    return listed(response, await items.page(db, TRANSFORMATIONS, query={}, limit=page.limit, offset=page.offset))


@router.get("/transformation/meta/{transformation_id}", response_model=TransformationOut, responses=problems(404))
async def get_transformation_meta(transformation_id: TransformationId, db: DB) -> dict[str, Any]:
    """One transformation's metadata (GET /transformation/{id} is the file, as in aerOS)."""
    return await items.get(db, TRANSFORMATIONS, _key(transformation_id))


@router.get(
    "/transformation/{transformation_id}",
    response_class=Response,
    responses={**FILE_RESPONSE, **problems(404, 416)},
)
@router.head("/transformation/{transformation_id}", response_class=Response, include_in_schema=False)
async def download_transformation(transformation_id: TransformationId, request: Request, db: DB) -> Response:
    """The transformation's file, streamed."""
    return file_response(request, await items.open_file(db, TRANSFORMATIONS, _key(transformation_id)))


@router.delete("/transformation/{transformation_id}", status_code=204, responses=problems(404))
async def delete_transformation(transformation_id: TransformationId, db: DB) -> Response:
    """Delete a transformation and its file."""
    await items.delete(db, TRANSFORMATIONS, _key(transformation_id))
    return Response(status_code=204)
