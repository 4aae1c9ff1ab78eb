"""Training results: aggregated metrics in `results`, the final weights in GridFS."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from flrepo.schemas import TrainingResultIn, TrainingResultOut
from flrepo.schemas.identifiers import Identifier
from flrepo.server.auth import TaskActor
from flrepo.server.deps import DB, FILE_RESPONSE, Page, SettingsDep, listed, problems
from flrepo.server.http.conditions import UploadCondition
from flrepo.server.http.downloads import file_response
from flrepo.server.http.file_uploads import UPLOAD_OPENAPI, receiver, upload_responses, uploaded
from flrepo.server.http.json_body import JsonBodyRoute
from flrepo.server.repository import items, outputs
from flrepo.server.repository.kinds import RESULTS

router = APIRouter(tags=["training results"], route_class=JsonBodyRoute)

Name = Annotated[Identifier, Path(description="Model name")]
Version = Annotated[Identifier, Path(description="Model version")]
TrainingId = Annotated[Identifier, Path(description="Training id")]


def _key(name: str, version: str, training_id: str) -> dict[str, Any]:
    return {"model_name": name, "model_version": version, "training_id": training_id}


@router.post("/training-results", status_code=201, response_model=TrainingResultOut, responses=problems(409))
async def create_training_result(body: TrainingResultIn, db: DB, actor: TaskActor) -> dict[str, Any]:
    """Record a training's results; values keep their JSON types (strings stay strings). The result a task
    will publish (training id = task id, on the task's model) is reserved for its collector (403)."""
    await outputs.check_result(db, body.model_name, body.model_version, body.training_id, actor)
    return await items.create(db, RESULTS, body.model_dump())


@router.get("/training-results", response_model=list[TrainingResultOut], responses=problems())
async def list_training_results(db: DB, page: Page, response: Response) -> list[dict[str, Any]]:
    """All training results (`X-Total-Count` holds the total)."""
    return listed(response, await items.page(db, RESULTS, query={}, limit=page.limit, offset=page.offset))


@router.get(
    "/training-results/{model_name}/{model_version}",
    response_model=list[TrainingResultOut],
    responses=problems(),
)
async def list_model_training_results(
    model_name: Name, model_version: Version, db: DB, page: Page, response: Response
) -> list[dict[str, Any]]:
    """The training results of one model (an empty list when it has none)."""
    query = {"model_name": model_name, "model_version": model_version}
    return listed(response, await items.page(db, RESULTS, query=query, limit=page.limit, offset=page.offset))


@router.get(
    "/training-results/{model_name}/{model_version}/{training_id}",
    response_model=TrainingResultOut,
    responses=problems(404),
)
async def get_training_result(
    model_name: Name, model_version: Version, training_id: TrainingId, db: DB
) -> dict[str, Any]:
    """One training result's metadata."""
    return await items.get(db, RESULTS, _key(model_name, model_version, training_id))


@router.put(
    "/training-results/{model_name}/{model_version}/{training_id}/{configuration_id}",
    status_code=204,
    responses=upload_responses(409),
    openapi_extra=UPLOAD_OPENAPI,
)
async def upload_weights(
    model_name: Name,
    model_version: Version,
    training_id: TrainingId,
    configuration_id: Annotated[Identifier, Path(description="Must equal the result's configuration_id")],
    request: Request,
    db: DB,
    settings: SettingsDep,
    condition: UploadCondition,
    actor: TaskActor,
) -> Response:
    """Create or replace the final weights of a training result."""
    await outputs.check_result(db, model_name, model_version, training_id, actor)
    key = _key(model_name, model_version, training_id)
    limit = settings.max_upload_bytes
    # The path's configuration_id must be the result's own (409 otherwise), checked before any byte is read.
    expect = {"configuration_id": configuration_id}
    stored = await items.attach(db, RESULTS, key, receiver(request, limit), limit, expect=expect, condition=condition)
    return uploaded(stored)


@router.get(
    "/training-results/weights/{model_name}/{model_version}/{training_id}",
    response_class=Response,
    responses={
        **FILE_RESPONSE,
        200: {
            **FILE_RESPONSE[200],
            "description": "aerOS 1.1.0's body, the weights as base64 text; the weights themselves, streamed, "
            "with `encoding=raw` or `Accept: application/octet-stream`",
            "content": {
                "text/plain": {"schema": {"type": "string", "contentEncoding": "base64"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **problems(404, 416),
    },
)
@router.head(
    "/training-results/weights/{model_name}/{model_version}/{training_id}",
    response_class=Response,
    include_in_schema=False,
)
async def download_weights(
    model_name: Name,
    model_version: Version,
    training_id: TrainingId,
    request: Request,
    db: DB,
    encoding: Annotated[
        Literal["raw", "binary", "base64"] | None,
        Query(
            description="`raw` (or `binary`): the weights as stored, with ETag and Range; "
            "`base64` (the default, as aerOS 1.1.0 answers and its GUI decodes): base64 text."
        ),
    ] = None,
) -> Response:
    """The final weights: base64 text as aerOS 1.1.0 answers, or the file itself when asked."""
    view = await items.open_file(db, RESULTS, _key(model_name, model_version, training_id))
    if wants_raw(encoding, request.headers.get("accept")):
        return file_response(request, view)
    length = 4 * -(-view.size // 3)
    return StreamingResponse(
        _base64(view.read()), media_type=BASE64_TYPE, headers={"Content-Length": str(length), "Vary": "Accept"}
    )


# aerOS sent no Content-Type with its base64 body; plain ASCII text is what it is.
BASE64_TYPE = "text/plain; charset=us-ascii"


def wants_raw(encoding: str | None, accept: str | None) -> bool:
    """The file itself, rather than aerOS's base64 body: asked by `encoding`, or by an Accept header
    naming application/octet-stream (and not only as `*/*`, which every HTTP client sends)."""
    if encoding is not None:
        return encoding != "base64"
    types = [part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",")]
    return "application/octet-stream" in types


async def _base64(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`base64.b64encode(weights)`, aerOS's body, a chunk at a time (cut at multiples of 3 bytes)."""
    carry = b""
    async for chunk in chunks:
        data = carry + chunk
        cut = len(data) - len(data) % 3
        carry = data[cut:]
        yield base64.b64encode(data[:cut])
    yield base64.b64encode(carry)


@router.delete("/training-results/{model_name}/{model_version}/{training_id}", status_code=204, responses=problems(404))
async def delete_training_result(model_name: Name, model_version: Version, training_id: TrainingId, db: DB) -> Response:
    """Delete a training result and its weights."""
    await items.delete(db, RESULTS, _key(model_name, model_version, training_id))
    return Response(status_code=204)
