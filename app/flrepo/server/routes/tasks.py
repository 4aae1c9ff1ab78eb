"""FL tasks: training plans that a training collector runs, with the status it reports."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response

from flrepo.schemas.identifiers import Identifier
from flrepo.schemas.tasks import ALLOWED_FROM, TERMINAL, Phase, StatusUpdate, TaskIn, TaskOut
from flrepo.server.deps import DB, Page, problems
from flrepo.server.repository import items as store
from flrepo.server.repository.kinds import MODELS, STRATEGIES, TASKS, TRANSFORMATIONS
from flrepo.server.storage.db import Database

router = APIRouter(tags=["tasks"])

TaskId = Annotated[Identifier, Path(description="Task id")]


async def _missing_references(db: Database, body: TaskIn) -> list[str]:
    """Every reference of the plan that does not exist (or has no file where one is needed)."""
    missing = []
    model_key = body.model.model_dump()
    if await db.models.count_documents(model_key, limit=1) == 0:
        missing.append(MODELS.describe(model_key))
    strategy = await db.strategies.find_one(body.strategy.model_dump(), {STRATEGIES.id_field: 1})
    if strategy is None:
        missing.append(STRATEGIES.describe(body.strategy.model_dump()))
    elif not strategy.get(STRATEGIES.id_field):
        missing.append(f"the file of {STRATEGIES.describe(body.strategy.model_dump())}")
    for ref in body.transformations:
        doc = await db.transformations.find_one({"id": ref.id}, {TRANSFORMATIONS.id_field: 1})
        if doc is None:
            missing.append(TRANSFORMATIONS.describe({"id": ref.id}))
        elif not doc.get(TRANSFORMATIONS.id_field):
            missing.append(f"the file of {TRANSFORMATIONS.describe({'id': ref.id})}")
    return missing


@router.post("/tasks", status_code=201, response_model=TaskOut, responses=problems(409))
async def create_task(body: TaskIn, db: DB) -> dict[str, Any]:
    """Register a training plan; it starts `Pending` until a training collector picks it up."""
    missing = await _missing_references(db, body)
    if missing:
        raise HTTPException(422, "unknown references: " + "; ".join(missing))
    doc = body.model_dump(mode="python")
    doc["task_id"] = body.task_id or uuid.uuid4().hex
    doc.update(
        phase=Phase.PENDING.value,
        conditions=[],
        start_time=None,
        completion_time=None,
        current_round=0,
        participants=[],
        history=[],
        result=None,
    )
    return await store.create(db, TASKS, doc)


@router.get("/tasks", response_model=list[TaskOut], responses=problems())
async def list_tasks(
    db: DB, page: Page, response: Response, phase: Annotated[Phase | None, Query()] = None
) -> list[dict[str, Any]]:
    """All tasks, optionally in one phase (`X-Total-Count` holds the total)."""
    query = {"phase": phase.value} if phase else {}
    return await store.page(db, TASKS, response, query=query, limit=page.limit, offset=page.offset)


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=problems(404))
async def get_task(task_id: TaskId, db: DB) -> dict[str, Any]:
    """One task with its live status."""
    return await store.get(db, TASKS, {"task_id": task_id})


@router.put("/tasks/{task_id}/status", response_model=TaskOut, responses=problems(404, 409))
async def update_task_status(task_id: TaskId, body: StatusUpdate, db: DB) -> dict[str, Any]:
    """Report progress: a phase change, the current round, participants, a finished round, the result.

    Phases move Pending → Running → Succeeded | Failed (or Pending → Failed); anything else, and
    any change to a finished task, is 409.
    """
    key = {"task_id": task_id}
    current = await store.get(db, TASKS, key)
    phase_now = Phase(current["phase"])
    target = body.phase or phase_now
    if phase_now in TERMINAL or phase_now not in ALLOWED_FROM[target]:
        raise HTTPException(409, f"task {task_id!r} is {phase_now.value}; cannot move to {target.value}")

    stamp = store.now()
    fields: dict[str, Any] = {"phase": target.value, "updated_at": stamp}
    update: dict[str, Any] = {"$set": fields}
    if body.current_round is not None:
        fields["current_round"] = body.current_round
    if body.participants is not None:
        fields["participants"] = [p.model_dump() for p in body.participants]
    if body.result is not None:
        fields["result"] = body.result.model_dump()
    pushes: dict[str, Any] = {}
    if body.round is not None:
        pushes["history"] = body.round.model_dump()
    if target != phase_now:
        if target == Phase.RUNNING:
            fields["start_time"] = stamp
        if target in TERMINAL:
            fields["completion_time"] = stamp
        pushes["conditions"] = {
            "type": target.value,
            "status": "True",
            "reason": body.reason or target.value,
            "message": body.message,
            "last_transition_time": stamp,
        }
    if pushes:
        update["$push"] = pushes
    # The phase read above is part of the filter: a concurrent transition makes this match nothing.
    result = await db.tasks.update_one({**key, "phase": phase_now.value}, update)
    if result.matched_count == 0:
        raise HTTPException(409, f"task {task_id!r} changed while this update was applied; read it and retry")
    return await store.get(db, TASKS, key)


@router.delete("/tasks/{task_id}", status_code=204, responses=problems(404, 409))
async def delete_task(task_id: TaskId, db: DB) -> Response:
    """Delete a task that is not running."""
    key = {"task_id": task_id}
    result = await db.tasks.delete_one({**key, "phase": {"$ne": Phase.RUNNING.value}})
    if result.deleted_count == 0:
        await store.get(db, TASKS, key)  # 404 when it does not exist
        raise HTTPException(409, f"task {task_id!r} is Running; let it finish or fail first")
    return Response(status_code=204)
