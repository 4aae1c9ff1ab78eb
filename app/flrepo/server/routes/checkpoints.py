"""A task's checkpoints: the aggregated weights (.npz) after each round, bounded per task."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from flrepo.schemas.identifiers import Identifier
from flrepo.schemas.tasks import CheckpointIn, CheckpointOut
from flrepo.server.auth import TaskActor
from flrepo.server.deps import DB, FILE_RESPONSE, Page, SettingsDep, listed, problems
from flrepo.server.http.conditions import UploadCondition
from flrepo.server.http.downloads import file_response
from flrepo.server.http.file_uploads import UPLOAD_OPENAPI, receiver, upload_responses, uploaded
from flrepo.server.http.json_body import JsonBodyRoute
from flrepo.server.repository import checkpoints

router = APIRouter(tags=["tasks"], route_class=JsonBodyRoute)

TaskId = Annotated[Identifier, Path(description="Task id")]
Round = Annotated[int, Path(ge=1, le=10_000, description="Round number")]
# The longest `metrics` a registering upload takes in its query string: well under proxies' URL limits
# (nginx's 8 KB header buffers); a round's numeric metrics fit many times over.
METRICS_QUERY_CHARS = 4096


@router.post(
    "/tasks/{task_id}/checkpoints", status_code=201, response_model=CheckpointOut, responses=problems(404, 409)
)
async def create_checkpoint(task_id: TaskId, body: CheckpointIn, db: DB, actor: TaskActor) -> dict[str, Any]:
    """Register a round's aggregated weights (upload the file next). Only the collector that claimed the
    task (`X-Task-Token`) or an admin (403 otherwise), only while the task runs and for a round it has
    reached (409 otherwise)."""
    return await checkpoints.create(db, task_id, body, actor)


@router.put(
    "/tasks/{task_id}/checkpoints/{round}",
    status_code=204,
    responses=upload_responses(409),
    openapi_extra=UPLOAD_OPENAPI,
)
async def upload_checkpoint(
    task_id: TaskId,
    round: Round,
    request: Request,
    db: DB,
    settings: SettingsDep,
    condition: UploadCondition,
    actor: TaskActor,
    register: Annotated[
        bool,
        Query(
            description="Register the checkpoint with this upload, with `loss` and `metrics`, as "
            "`POST /tasks/{task_id}/checkpoints` would (the same checks): one request instead of two."
        ),
    ] = False,
    loss: Annotated[float | None, Query(description="With `register`: the round's validation loss.")] = None,
    metrics: Annotated[
        str | None,
        Query(max_length=METRICS_QUERY_CHARS, description="With `register`: the round's metrics, a JSON object."),
    ] = None,
) -> Response:
    """The checkpoint's weights (.npz), once: a checkpoint with its file is immutable (409). Only the
    collector that claimed the task (`X-Task-Token`) or an admin. Updates the task's `best`; older
    checkpoints beyond the task's `checkpoints_kept` are removed. Registered first (`POST
    /tasks/{task_id}/checkpoints`), or by this request with `register=true`."""
    registered = _registration(round, loss, metrics) if register else None
    limit = settings.max_upload_bytes
    receive = receiver(request, limit)
    stored = await checkpoints.attach(db, task_id, round, receive, limit, condition, actor, registered)
    return uploaded(stored)


def _registration(round_number: int, loss: float | None, metrics: str | None) -> CheckpointIn:
    """The checkpoint that `register=true` registers; 422 (as for POST's body) for a `metrics` that is not
    a JSON object of metric values or a `loss` that is not finite."""
    try:
        found = json.loads(metrics) if metrics else {}
    except (ValueError, RecursionError) as exc:  # not JSON, or nested past the parser's depth
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("query", "metrics"), "msg": f"not JSON: {exc}", "input": metrics}]
        ) from None
    try:
        return CheckpointIn.model_validate({"round": round_number, "loss": loss, "metrics": found})
    except ValidationError as exc:
        errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        raise RequestValidationError(errors) from None


@router.get("/tasks/{task_id}/checkpoints", response_model=list[CheckpointOut], responses=problems(404))
async def list_checkpoints(task_id: TaskId, db: DB, page: Page, response: Response) -> list[dict[str, Any]]:
    """The task's checkpoints, oldest round first (`X-Total-Count` holds the total)."""
    return listed(response, await checkpoints.page(db, task_id, limit=page.limit, offset=page.offset))


@router.get(
    "/tasks/{task_id}/checkpoints/{round}",
    response_class=Response,
    responses={**FILE_RESPONSE, **problems(404, 416)},
)
@router.head("/tasks/{task_id}/checkpoints/{round}", response_class=Response, include_in_schema=False)
async def download_checkpoint(task_id: TaskId, round: Round, request: Request, db: DB) -> Response:
    """A checkpoint's weights, streamed (.npz)."""
    return file_response(request, await checkpoints.open_file(db, task_id, round))
