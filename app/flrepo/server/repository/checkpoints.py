"""Checkpoints: a task's aggregated weights after each round, bounded per task.

A checkpoint is registered (round, validation loss, metrics), then its .npz file is attached. Once
a file is attached the oldest checkpoints beyond the task's `checkpoints_kept` are removed, except
the best one (lowest loss), which the task's `best` field always describes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from flrepo.schemas.tasks import TERMINAL, CheckpointIn, Phase
from flrepo.server.repository import items
from flrepo.server.repository.items import FileCondition, FileView, Page
from flrepo.server.repository.kinds import CHECKPOINTS, TASKS
from flrepo.server.storage.blobs import IncomingFile, StoredFile
from flrepo.server.storage.db import Database
from flrepo.server.storage.errors import Conflict

BY_ROUND = [("round", 1)]


def key(task_id: str, round_number: int) -> dict[str, Any]:
    return {"task_id": task_id, "round": round_number}


async def create(db: Database, task_id: str, body: CheckpointIn) -> dict[str, Any]:
    """Register round `body.round` of a running task; the task's `best` follows the lowest loss."""
    task = await items.get(db, TASKS, {"task_id": task_id})
    if Phase(task["phase"]) in TERMINAL:
        raise Conflict(f"task {task_id!r} is {task['phase']}; it takes no more checkpoints")
    created = await items.create(db, CHECKPOINTS, {**key(task_id, body.round), **body.model_dump(exclude={"round"})})
    if body.loss is not None:
        best = {"round": body.round, "loss": body.loss, "metrics": body.metrics}
        # Only replaces a worse (or no) best: concurrent checkpoints cannot put back a worse one.
        await db.collection(TASKS.collection).update_one(
            {"task_id": task_id, "$or": [{"best": None}, {"best.loss": {"$gt": body.loss}}]},
            {"$set": {"best": best, "updated_at": items.now()}},
        )
    return created


async def attach(
    db: Database,
    task_id: str,
    round_number: int,
    receive: Callable[[], Awaitable[IncomingFile]],
    max_bytes: int,
    condition: FileCondition | None = None,
) -> StoredFile:
    stored = await items.attach(db, CHECKPOINTS, key(task_id, round_number), receive, max_bytes, condition=condition)
    await prune(db, task_id)
    return stored


async def prune(db: Database, task_id: str) -> list[int]:
    """Remove the checkpoints beyond the task's `checkpoints_kept` newest with a file (and older
    ones that never got their file), keeping the best; return the rounds removed."""
    task = await items.get(db, TASKS, {"task_id": task_id})
    kept = int(task.get("checkpoints_kept") or 3)
    best = (task.get("best") or {}).get("round")
    cursor = db.collection(CHECKPOINTS.collection).find({"task_id": task_id}, {"round": 1, "weights_id": 1, "_id": 0})
    docs = [doc async for doc in cursor]
    filed = sorted(doc["round"] for doc in docs if doc.get(CHECKPOINTS.id_field))
    newest = filed[-1] if filed else 0
    unfiled = [doc["round"] for doc in docs if not doc.get(CHECKPOINTS.id_field) and doc["round"] < newest]
    removed = sorted(r for r in [*filed[: max(0, len(filed) - kept)], *unfiled] if r != best)
    for r in removed:
        await items.delete(db, CHECKPOINTS, key(task_id, r))
    return removed


async def page(db: Database, task_id: str, *, limit: int, offset: int) -> Page:
    await items.get(db, TASKS, {"task_id": task_id})  # NotFound for an unknown task
    return await items.page(db, CHECKPOINTS, query={"task_id": task_id}, limit=limit, offset=offset, sort=BY_ROUND)


async def open_file(db: Database, task_id: str, round_number: int) -> FileView:
    return await items.open_file(db, CHECKPOINTS, key(task_id, round_number))


async def delete_all(db: Database, task_id: str) -> None:
    """Every checkpoint of a task, with its file (when the task is deleted)."""
    cursor = db.collection(CHECKPOINTS.collection).find({"task_id": task_id}, {"round": 1, "_id": 0})
    for r in [doc["round"] async for doc in cursor]:
        await items.delete(db, CHECKPOINTS, key(task_id, r))
