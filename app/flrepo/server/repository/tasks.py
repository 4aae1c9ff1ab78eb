"""FL tasks in the store: creation with checked references, status updates through the phase
machine (flrepo.schemas.tasks), cancelling, deletion of tasks that are not running. Every status
report is also the collector's heartbeat (flrepo.server.repository.liveness fails tasks whose
collector stopped reporting)."""

from __future__ import annotations

import uuid
from typing import Any

from flrepo.schemas.identifiers import MAX_IDENTIFIER
from flrepo.schemas.tasks import (
    CANCELLED,
    TERMINAL,
    InvalidTransition,
    Phase,
    StatusUpdate,
    TaskIn,
    initial_status,
    output_version,
    transition,
)
from flrepo.server.repository import checkpoints, items
from flrepo.server.repository.items import Page
from flrepo.server.repository.kinds import MODELS, STRATEGIES, TASKS, TRANSFORMATIONS, Kind
from flrepo.server.storage.db import Database
from flrepo.server.storage.errors import AlreadyExists, Conflict, Invalid


def _key(task_id: str) -> dict[str, Any]:
    return {"task_id": task_id}


async def _missing(db: Database, kind: Kind, key: dict[str, Any], needs_file: bool) -> str | None:
    projection = {kind.file_field: 1} if kind.file_field else {"_id": 1}
    doc = await db.collection(kind.collection).find_one(key, projection)
    if doc is None:
        return kind.describe(key)
    if needs_file and not doc.get(kind.id_field):
        return f"the file of {kind.describe(key)}"
    return None


async def missing_references(db: Database, body: TaskIn) -> list[str]:
    """Every reference of the plan that does not exist (or has no file where one is needed)."""
    checks = [
        (MODELS, body.model.model_dump(), False),
        (STRATEGIES, body.strategy.model_dump(), True),
        *((TRANSFORMATIONS, {"id": ref.id}, True) for ref in body.transformations),
    ]
    missing = [await _missing(db, kind, key, needs_file) for kind, key, needs_file in checks]
    return [m for m in missing if m]


async def create(db: Database, body: TaskIn) -> dict[str, Any]:
    """Register a plan, Pending, after checking that everything it names exists."""
    missing = await missing_references(db, body)
    if missing:
        raise Invalid("unknown references: " + "; ".join(missing))
    doc = body.model_dump(mode="python")
    doc["task_id"] = body.task_id or uuid.uuid4().hex
    output = {"model_name": body.model.model_name, "model_version": output_version(doc)}
    if len(output["model_version"]) > MAX_IDENTIFIER:
        raise Invalid(
            f"the output model version `{{model_version}}-{{task_id}}` is over {MAX_IDENTIFIER} characters; "
            "set output_model_version"
        )
    if await items.exists(db, MODELS, output):
        raise AlreadyExists(
            f"the trained model would be {MODELS.describe(output)}, which exists; choose another output_model_version"
        )
    doc.update(initial_status())
    return await items.create(db, TASKS, doc)


async def page(db: Database, *, phase: Phase | None, limit: int, offset: int) -> Page:
    query = {"phase": phase.value} if phase else {}
    return await items.page(db, TASKS, query=query, limit=limit, offset=offset)


async def report(db: Database, task_id: str, update: StatusUpdate) -> dict[str, Any]:
    """Apply a collector's status update; Conflict when the phase does not allow it."""
    # Where the store's updates are not atomic (FerretDB), the lock keeps two transitions (a
    # collector's end and a cancel, say) from both passing the phase filter below.
    async with db.dialect.item_lock(lock_key(task_id)):
        return await _report(db, task_id, update)


def lock_key(task_id: str) -> tuple[str, str]:
    return (TASKS.collection, task_id)


async def _report(db: Database, task_id: str, update: StatusUpdate) -> dict[str, Any]:
    key = _key(task_id)
    current = await items.get(db, TASKS, key)
    phase_now = Phase(current["phase"])
    stamp = items.now()
    try:
        fields, pushes = transition(phase_now, update, stamp)
    except InvalidTransition as exc:
        raise Conflict(f"task {task_id!r} {exc}") from None
    if fields["phase"] == Phase.RUNNING.value:
        # Every report of a running task is its collector's heartbeat, with the round it is at.
        round_now = update.current_round if update.current_round is not None else current.get("current_round", 0)
        fields["heartbeat"] = {"time": stamp, "round": round_now, "collector": update.collector}
    change: dict[str, Any] = {"$set": {**fields, "updated_at": stamp}}
    if pushes:
        change["$push"] = pushes
    db.dialect.check_document(change)
    # The phase read above is part of the filter: a concurrent transition makes this match nothing.
    result = await db.collection(TASKS.collection).update_one({**key, "phase": phase_now.value}, change)
    if result.matched_count == 0:
        raise Conflict(f"task {task_id!r} changed while this update was applied; read it and retry")
    return await items.get(db, TASKS, key)


async def cancel(db: Database, task_id: str, message: str | None) -> dict[str, Any]:
    """End a Pending or Running task: Failed with reason Cancelled. Its collector sees it at its next
    heartbeat and stops; Conflict when the task has ended already."""
    current = await items.get(db, TASKS, _key(task_id))
    if Phase(current["phase"]) in TERMINAL:
        raise Conflict(f"task {task_id!r} is {current['phase']} already; nothing to cancel")
    return await report(db, task_id, StatusUpdate(phase=Phase.FAILED, reason=CANCELLED, message=message))


async def delete(db: Database, task_id: str) -> None:
    """Delete a task that is not running (Conflict while it runs, NotFound when there is none)."""
    key = _key(task_id)
    result = await db.collection(TASKS.collection).delete_one({**key, "phase": {"$ne": Phase.RUNNING.value}})
    if result.deleted_count == 0:
        await items.get(db, TASKS, key)  # NotFound when it does not exist
        raise Conflict(f"task {task_id!r} is Running; cancel it first (POST /tasks/{task_id}/cancel)")
    await checkpoints.delete_all(db, task_id)
