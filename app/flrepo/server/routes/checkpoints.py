"""A task's checkpoints: the aggregated weights (.npz) after each round, bounded per task."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

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
) -> Response:
    """The checkpoint's weights (.npz), once: a checkpoint with its file is immutable (409). Only the
    collector that claimed the task (`X-Task-Token`) or an admin. Updates the task's `best`; older
    checkpoints beyond the task's `checkpoints_kept` are removed."""
    limit = settings.max_upload_bytes
    stored = await checkpoints.attach(db, task_id, round, receiver(request, limit), limit, condition, actor)
    return uploaded(stored)


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
