"""ML models: metadata in `models`, the model file in GridFS (aerOS paths and field names)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from flrepo.schemas import ModelIn, ModelMeta, ModelOut
from flrepo.schemas.identifiers import Identifier
from flrepo.server.auth import TaskActor
from flrepo.server.deps import DB, FILE_RESPONSE, Page, SettingsDep, listed, listed_headers, problems
from flrepo.server.http.archive import archive_response
from flrepo.server.http.conditions import UploadCondition
from flrepo.server.http.downloads import file_response
from flrepo.server.http.file_uploads import UPLOAD_OPENAPI, receiver, upload_responses, uploaded
from flrepo.server.http.json_body import JsonBodyRoute
from flrepo.server.http.list_json import items_json
from flrepo.server.repository import items, models, outputs
from flrepo.server.repository.kinds import MODELS

router = APIRouter(tags=["models"], route_class=JsonBodyRoute)

Name = Annotated[Identifier, Path(description="Model name")]
Version = Annotated[Identifier, Path(description="Model version")]


# ModelOut's fields, each null unless the document holds it (every one of them defaults to null;
# tests/server/test_models.py checks the list answers what ModelOut would).
LISTED_FIELDS: dict[str, Any] = dict.fromkeys(ModelOut.model_fields)


def _key(name: str, version: str) -> dict[str, Any]:
    return {"model_name": name, "model_version": version}


@router.post("/model", status_code=201, response_model=ModelOut, responses=problems(409))
async def create_model(body: ModelIn, db: DB, actor: TaskActor) -> dict[str, Any]:
    """Add the metadata of a new initial model. A version a task will publish its trained model as is
    reserved for that task's collector (`X-Task-Token`) or an admin (403)."""
    await outputs.check_model(db, body.model_name, body.model_version, actor)
    return await items.create(db, MODELS, body.model_dump())


@router.put(
    "/model/meta/{model_name}/{model_version}",
    status_code=204,
    responses=problems(404),
)
async def update_model_meta(
    model_name: Name,
    model_version: Version,
    db: DB,
    actor: TaskActor,
    body: Annotated[
        dict[str, Any],
        Body(
            description='The new `meta` object, or `{"meta": {...}}` as aerOS clients send it.',
            examples=[{"library": "keras", "description": "A CNN for CIFAR-10"}],
        ),
    ],
) -> Response:
    """Replace the metadata of a model."""
    await outputs.check_model(db, model_name, model_version, actor)
    raw = body.get("meta") if isinstance(body.get("meta"), dict) and set(body) <= set(ModelOut.model_fields) else body
    key = _key(model_name, model_version)
    try:
        meta = ModelMeta.model_validate(raw)
    except ValueError as exc:
        # An unknown model is 404 whatever the body says, as in aerOS (which looked the model up first).
        await items.get(db, MODELS, key)
        raise HTTPException(422, _errors(exc)) from None
    await items.update(db, MODELS, key, {"meta": meta.model_dump()})
    return Response(status_code=204)


def _errors(exc: ValueError) -> Any:
    errors = getattr(exc, "errors", None)
    return errors(include_url=False, include_context=False) if callable(errors) else str(exc)


@router.put(
    "/model/{model_name}/{model_version}",
    status_code=204,
    responses=upload_responses(),
    openapi_extra=UPLOAD_OPENAPI,
)
async def upload_model(
    model_name: Name,
    model_version: Version,
    request: Request,
    db: DB,
    settings: SettingsDep,
    condition: UploadCondition,
    actor: TaskActor,
) -> Response:
    """Create or replace the model's file (multipart field `file`, or a raw octet-stream body)."""
    await outputs.check_model(db, model_name, model_version, actor)
    limit = settings.max_upload_bytes
    stored = await items.attach(
        db, MODELS, _key(model_name, model_version), receiver(request, limit), limit, condition=condition
    )
    return uploaded(stored)


@router.get("/model", response_model=list[ModelOut], responses=problems())
async def list_models(
    db: DB,
    page: Page,
    trained: Annotated[
        bool | None, Query(description="Only models with (true) or without (false) training results.")
    ] = None,
) -> Response:
    """The metadata of all models (`X-Total-Count` holds the total)."""
    found = await models.page(db, trained=trained, limit=page.limit, offset=page.offset, naive_utc=True)
    # ModelOut's fields of each document, serialised as they are in one pass instead of validated into a
    # model first: half the service's work for a page of 1,000; datetimes read naive, written with their
    # `Z` by list_json. (Picked here, not projected by the store: FerretDB spends more on an inclusion
    # projection than on sending the whole document.)
    body = items_json(found.items, LISTED_FIELDS)
    return Response(body, media_type="application/json", headers=listed_headers(found))


@router.get("/model/meta", response_model=ModelOut, responses=problems(404))
async def get_model_meta(
    db: DB,
    model_name: Annotated[Identifier, Query()],
    model_version: Annotated[Identifier, Query()],
) -> dict[str, Any]:
    """The metadata of one model (query parameters, as aerOS clients call it)."""
    return await items.get(db, MODELS, _key(model_name, model_version))


@router.get(
    "/model/{model_name}/{model_version}",
    response_class=Response,
    responses={**FILE_RESPONSE, **problems(404, 416)},
)
@router.head("/model/{model_name}/{model_version}", response_class=Response, include_in_schema=False)
async def download_model(model_name: Name, model_version: Version, request: Request, db: DB) -> Response:
    """The model file, streamed (supports HEAD and a single Range)."""
    return file_response(request, await items.open_file(db, MODELS, _key(model_name, model_version)))


@router.delete("/model/{model_name}/{model_version}", status_code=204, responses=problems(404))
async def delete_model(model_name: Name, model_version: Version, db: DB) -> Response:
    """Delete a model's metadata and its file."""
    await items.delete(db, MODELS, _key(model_name, model_version))
    return Response(status_code=204)


@router.get(
    "/models/available",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The GridFS file documents, oldest upload first, without `_id`",
            "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
        },
        **problems(),
    },
)
async def available_files(db: DB) -> StreamingResponse:
    """What aerOS 1.1.0 answers here (its GUI lists trained weights from it): the GridFS file document
    of every stored model, weights, strategy and transformation file (`filename` such as
    `weights/{name}/{version}/{configuration_id}`, `training_id`, `length`, `uploadDate`, ...), oldest
    upload first, encoded as aerOS encoded them. Models with a file, as model documents: `/models/with-files`."""
    return StreamingResponse(await models.available_files_json(db), media_type="application/json")


@router.get(
    "/models/download/shell/{model_name}/{model_version}/{configuration_id}",
    response_class=Response,
    responses={
        200: {
            "description": "A list with the newest GridFS file document of those weights, or an empty list",
            "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
        },
        **problems(),
    },
)
async def shell_weights(
    model_name: Annotated[str, Path(max_length=255)],
    model_version: Annotated[str, Path(max_length=255)],
    configuration_id: Annotated[str, Path(max_length=255)],
    db: DB,
) -> Response:
    """What aerOS's GUI asks when it downloads a configuration's trained weights (fl-api `modelShell`):
    the newest GridFS file document named `weights/{model_name}/{model_version}/{configuration_id}`, as
    aerOS's `/models/download/shell/{filename}` answers it for that name (aerOS itself has no
    three-segment route and answers this call 404)."""
    body = await models.newest_file_json(db, f"weights/{model_name}/{model_version}/{configuration_id}")
    return Response(body, media_type="application/json")


@router.get("/models/with-files", response_model=list[ModelOut], responses=problems())
async def models_with_files(db: DB, page: Page, response: Response) -> list[dict[str, Any]]:
    """Models that have a file, newest upload first."""
    return listed(response, await models.page_available(db, limit=page.limit, offset=page.offset))


@router.get(
    "/models/download/shell/{filename}",
    response_class=Response,
    responses={
        200: {
            "description": "One archive with every available model's file",
            "content": {
                "application/zip": {"schema": {"type": "string", "format": "binary"}},
                "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                "application/gzip": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **problems(),
    },
)
async def download_all_models(
    filename: Annotated[str, Path(min_length=1, max_length=255, description="Archive name; .zip, .tar or .tar.gz")],
    db: DB,
) -> Response:
    """Every available model's file in one streamed archive, newest first: `{name}/{version}/{file}`."""
    return await archive_response(filename, partial(models.iter_archive_entries, db), partial(models.read_archived, db))
