"""FL tasks: training plans that a training collector runs, with the status it reports."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from flrepo.schemas.identifiers import Identifier
from flrepo.schemas.strict import split_unknown
from flrepo.schemas.tasks import CancelIn, Phase, RoundRecord, StatusUpdate, TaskIn, TaskOut
from flrepo.server.deps import DB, Page, SettingsDep, listed, problems
from flrepo.server.http.json_body import JsonBodyRoute
from flrepo.server.repository import tasks

router = APIRouter(tags=["tasks"], route_class=JsonBodyRoute)
log = logging.getLogger(__name__)

TaskId = Annotated[Identifier, Path(description="Task id")]
# Round records shown with a task; all of them are paged at /tasks/{task_id}/history.
SHOWN_ROUNDS = 100
History = Annotated[
    int,
    Query(ge=0, le=10_000, description="How many of the most recent round records to include in `history`."),
]


# Tasks whose stored fields were checked in this process: each stored task's unknown fields (written
# before unknown fields were refused) are logged once, not on every read. Bounded: cleared when full.
_checked: set[tuple[str, str]] = set()
_CHECKED_MAX = 10_000


def loaded(db: DB, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` as read from the store, after logging (once per task) the fields it holds that a task no
    longer accepts; they are left out of the answer (TaskOut), never fatal."""
    task_id = str(doc.get("task_id"))
    if (db.meta.name, task_id) in _checked:
        return doc
    if len(_checked) >= _CHECKED_MAX:
        _checked.clear()
    _checked.add((db.meta.name, task_id))
    _, unknown = split_unknown(TaskOut, doc, forbid=True)
    if unknown:
        log.warning("task %s was stored with fields no task accepts now, ignored: %s", task_id, ", ".join(unknown))
    return doc


@router.post("/tasks", status_code=201, response_model=TaskOut, responses=problems(409))
async def create_task(body: TaskIn, db: DB) -> dict[str, Any]:
    """Register a training plan; it starts `Pending` until a training collector picks it up."""
    return await tasks.create(db, body)


@router.get("/tasks", response_model=list[TaskOut], responses=problems())
async def list_tasks(
    db: DB,
    page: Page,
    response: Response,
    phase: Annotated[Phase | None, Query()] = None,
    history: History = 0,
) -> list[dict[str, Any]]:
    """All tasks, optionally in one phase (`X-Total-Count` holds the total); round records only when asked."""
    found = await tasks.page(db, phase=phase, limit=page.limit, offset=page.offset, history=history)
    return [loaded(db, doc) for doc in listed(response, found)]


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=problems(404))
async def get_task(task_id: TaskId, db: DB, history: History = SHOWN_ROUNDS) -> dict[str, Any]:
    """One task with its live status and its most recent round records (`history_total` counts all kept)."""
    return loaded(db, await tasks.get(db, task_id, history=history))


@router.get("/tasks/{task_id}/history", response_model=list[RoundRecord], responses=problems(404))
async def get_task_history(task_id: TaskId, db: DB, page: Page, response: Response) -> list[dict[str, Any]]:
    """The task's round records, oldest first, a page at a time (`X-Total-Count` holds how many are kept)."""
    return listed(response, await tasks.history_page(db, task_id, limit=page.limit, offset=page.offset))


@router.put("/tasks/{task_id}/status", response_model=TaskOut, responses=problems(404, 409, 413))
async def update_task_status(task_id: TaskId, body: StatusUpdate, db: DB, settings: SettingsDep) -> dict[str, Any]:
    """Report progress: a phase change, the current round, participants, a finished round, the result.

    Phases move Pending → Running → Succeeded | Failed (or Pending → Failed); anything else, and
    any change to a finished task, is 409.
    """
    keep, limit = settings.task_history_rounds, settings.task_record_bytes
    reported = await tasks.report(db, task_id, body, keep_rounds=keep, record_bytes=limit)
    return loaded(db, tasks.shown(reported, SHOWN_ROUNDS))


@router.post("/tasks/{task_id}/cancel", response_model=TaskOut, responses=problems(404, 409))
async def cancel_task(
    task_id: TaskId, db: DB, settings: SettingsDep, request: Request, body: CancelIn | None = None
) -> dict[str, Any]:
    """End a Pending or Running task: it becomes `Failed` with reason `Cancelled`. Its training collector
    notices within one heartbeat, stops the Flower server and exits; its local executions exit. 409 when
    the task has ended already. A cancelled task can then be deleted."""
    principal = getattr(request.state, "principal", None)
    by = f"cancelled by {principal.key_id}" if principal else "cancelled"
    message = f"{by}: {body.message}" if body and body.message else by
    keep, limit = settings.task_history_rounds, settings.task_record_bytes
    cancelled = await tasks.cancel(db, task_id, message, keep_rounds=keep, record_bytes=limit)
    return loaded(db, tasks.shown(cancelled, SHOWN_ROUNDS))


@router.delete("/tasks/{task_id}", status_code=204, responses=problems(404, 409))
async def delete_task(task_id: TaskId, db: DB) -> Response:
    """Delete a task that is not running (finished, cancelled or still Pending)."""
    await tasks.delete(db, task_id)
    return Response(status_code=204)
