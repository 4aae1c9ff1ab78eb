"""FL tasks: training plans that a training collector runs, with the status it reports."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from flrepo.schemas.identifiers import Identifier
from flrepo.schemas.tasks import Phase, StatusUpdate, TaskIn, TaskOut
from flrepo.server.deps import DB, Page, listed, problems
from flrepo.server.http.strict_json import StrictJSONRoute
from flrepo.server.repository import items, tasks
from flrepo.server.repository.kinds import TASKS

router = APIRouter(tags=["tasks"], route_class=StrictJSONRoute)

TaskId = Annotated[Identifier, Path(description="Task id")]


@router.post("/tasks", status_code=201, response_model=TaskOut, responses=problems(409))
async def create_task(body: TaskIn, db: DB) -> dict[str, Any]:
    """Register a training plan; it starts `Pending` until a training collector picks it up."""
    return await tasks.create(db, body)


@router.get("/tasks", response_model=list[TaskOut], responses=problems())
async def list_tasks(
    db: DB, page: Page, response: Response, phase: Annotated[Phase | None, Query()] = None
) -> list[dict[str, Any]]:
    """All tasks, optionally in one phase (`X-Total-Count` holds the total)."""
    return listed(response, await tasks.page(db, phase=phase, limit=page.limit, offset=page.offset))


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=problems(404))
async def get_task(task_id: TaskId, db: DB) -> dict[str, Any]:
    """One task with its live status."""
    return await items.get(db, TASKS, {"task_id": task_id})


@router.put("/tasks/{task_id}/status", response_model=TaskOut, responses=problems(404, 409))
async def update_task_status(task_id: TaskId, body: StatusUpdate, db: DB) -> dict[str, Any]:
    """Report progress: a phase change, the current round, participants, a finished round, the result.

    Phases move Pending → Running → Succeeded | Failed (or Pending → Failed); anything else, and
    any change to a finished task, is 409.
    """
    return await tasks.report(db, task_id, body)


@router.delete("/tasks/{task_id}", status_code=204, responses=problems(404, 409))
async def delete_task(task_id: TaskId, db: DB) -> Response:
    """Delete a task that is not running."""
    await tasks.delete(db, task_id)
    return Response(status_code=204)
