"""FL tasks: training plans that a training collector runs, with the status it reports."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from flrepo.schemas.identifiers import Identifier
from flrepo.schemas.strict import split_unknown
from flrepo.schemas.tasks import (
    CancelIn,
    ClaimIn,
    ClaimOut,
    Phase,
    RoundRecord,
    SiteReportIn,
    StatusUpdate,
    TaskIn,
    TaskOut,
)
from flrepo.server.auth import Principal, Role, TaskActor, authenticate
from flrepo.server.deps import DB, Page, SettingsDep, listed, problems
from flrepo.server.http.json_body import JsonBodyRoute
from flrepo.server.repository import claims, site_reports, task_ends, tasks

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


WaitEnd = Annotated[
    float,
    Query(
        ge=0,
        le=task_ends.MAX_WAIT_SECONDS,
        description="Hold the answer up to this many seconds while the task has not ended: it comes as soon "
        "as the task is Succeeded or Failed, or when the time is up, with the task as it is then (a local "
        "execution learns its task's end at once without asking every few seconds). 0: answer at once.",
    ),
]


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=problems(404))
async def get_task(task_id: TaskId, db: DB, history: History = SHOWN_ROUNDS, wait_end: WaitEnd = 0) -> dict[str, Any]:
    """One task with its live status and its most recent round records (`history_total` counts all kept)."""
    if wait_end > 0:
        await task_ends.wait_end(db, task_id, wait_end)
    return loaded(db, await tasks.get(db, task_id, history=history))


@router.get("/tasks/{task_id}/history", response_model=list[RoundRecord], responses=problems(404))
async def get_task_history(task_id: TaskId, db: DB, page: Page, response: Response) -> list[dict[str, Any]]:
    """The task's round records, oldest first, a page at a time (`X-Total-Count` holds how many are kept)."""
    return listed(response, await tasks.history_page(db, task_id, limit=page.limit, offset=page.offset))


@router.post("/tasks/{task_id}/claim", response_model=ClaimOut, responses=problems(404, 409))
async def claim_task(
    task_id: TaskId, body: ClaimIn, db: DB, principal: Annotated[Principal, Depends(authenticate)]
) -> dict[str, Any]:
    """A collector starting for the task claims it and gets its task token, once (send it as
    `X-Task-Token` with every status report, heartbeat, checkpoint and the publication of the task's
    output). 409 while another collector's claim is live (it lapses after `heartbeat_timeout` without a
    heartbeat) or when the task has ended; a restarted collector re-claims at once with its `token`."""
    return await claims.claim(db, task_id, body, principal.key_id, admin=principal.role >= Role.ADMIN)


@router.put("/tasks/{task_id}/status", response_model=TaskOut, responses=problems(404, 409, 413))
async def update_task_status(
    task_id: TaskId,
    body: StatusUpdate,
    db: DB,
    settings: SettingsDep,
    actor: TaskActor,
    history: History = SHOWN_ROUNDS,
) -> dict[str, Any]:
    """Report progress: a phase change, the current round, participants, a finished round, the result.
    Only the collector that claimed the task (its `X-Task-Token`) or an admin may (403 otherwise).
    The answer is the task as the report left it, with its `history` most recent round records (a
    collector that reads none of them asks for 0: the answer of every round is then a tenth of the size).

    Phases move Pending → Running → Succeeded | Failed (or Pending → Failed); anything else, and
    any change to a finished task, is 409.
    """
    reported = await tasks.report(
        db,
        task_id,
        body,
        keep_rounds=settings.task_history_rounds,
        record_bytes=settings.task_record_bytes,
        report_bytes=settings.task_report_bytes,
        actor=actor,
    )
    return loaded(db, await tasks.shown(db, reported, history))


@router.put("/tasks/{task_id}/sites", response_model=TaskOut, responses=problems(404, 409))
async def report_site(
    task_id: TaskId, body: SiteReportIn, db: DB, principal: Annotated[Principal, Depends(authenticate)]
) -> dict[str, Any]:
    """A local execution's own record in the task (joining, failed with a reason, done): it replaces
    only the record of the same site sent with the same API key. The task's collector reads them (a
    failed site fails the task). 409 once the task has ended."""
    return loaded(db, await tasks.shown(db, await site_reports.put(db, task_id, body, principal.key_id), SHOWN_ROUNDS))


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
    return loaded(db, await tasks.shown(db, cancelled, SHOWN_ROUNDS))


@router.delete("/tasks/{task_id}", status_code=204, responses=problems(404, 409))
async def delete_task(task_id: TaskId, db: DB) -> Response:
    """Delete a task that is not running (finished, cancelled or still Pending)."""
    await tasks.delete(db, task_id)
    return Response(status_code=204)
