"""Checkpoints: a task's aggregated weights after each round, bounded per task.

A checkpoint is registered (round, validation loss, metrics), then its .npz file is attached, once:
only the collector holding the task's claim writes them (flrepo.server.repository.claims), only while
the task runs, only for rounds it has reached, and a checkpoint with its file never changes. Once a
file is attached the task's `best` (lowest loss among checkpoints with a file) follows it, and the
oldest checkpoints beyond the task's `checkpoints_kept` are removed, except the best one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from flrepo.schemas.tasks import TERMINAL, CheckpointIn, Phase
from flrepo.server.repository import claims, items, task_copies
from flrepo.server.repository.claims import Actor
from flrepo.server.repository.items import FileCondition, FileView, Page
from flrepo.server.repository.kinds import CHECKPOINTS, TASKS
from flrepo.server.storage.blobs import IncomingFile, StoredFile
from flrepo.server.storage.db import Database
from flrepo.server.storage.errors import AlreadyExists, Conflict

BY_ROUND = [("round", 1)]


def key(task_id: str, round_number: int) -> dict[str, Any]:
    return {"task_id": task_id, "round": round_number}


async def _writable(db: Database, task_id: str, actor: Actor | None) -> dict[str, Any]:
    """The task, if `actor` holds its claim and it has not ended (nothing is written after it ends)."""
    task = await claims.read(db, task_id)
    if actor is not None:
        claims.check(task, actor)
    if Phase(task["phase"]) in TERMINAL:
        raise Conflict(f"task {task_id!r} is {task['phase']}; it takes no more checkpoints")
    return task


def _check_round(task: dict[str, Any], round_number: int) -> None:
    """A collector checkpoints rounds within 1..rounds, at most one past the task's reported progress."""
    rounds = int(task.get("rounds") or 0)
    progress = max(int(task.get("current_round") or 0), int((task.get("heartbeat") or {}).get("round") or 0))
    if not 1 <= round_number <= rounds:
        raise Conflict(f"task {task['task_id']!r} has {rounds} rounds; there is no round {round_number}")
    if round_number > progress + 1:
        raise Conflict(f"task {task['task_id']!r} is at round {progress}; round {round_number} is not done yet")


async def create(db: Database, task_id: str, body: CheckpointIn, actor: Actor | None = None) -> dict[str, Any]:
    """Register round `body.round` of a running task (_writable, _check_round); the task's `best` follows the lowest
    loss once the file is there. A checkpoint with its file is immutable (Conflict); one registered without
    its file (a collector that died in between) is registered again."""
    return (await _registered(db, task_id, body, actor))[1]


async def _registered(
    db: Database, task_id: str, body: CheckpointIn, actor: Actor | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`create`, with the task as read."""
    task = await _writable(db, task_id, actor)
    if actor is None or not actor.admin:  # an admin (repairing, importing) is not bound to the run's progress
        _check_round(task, body.round)
    return task, await _register(db, task_id, body)


async def _register(db: Database, task_id: str, body: CheckpointIn) -> dict[str, Any]:
    fields = {**key(task_id, body.round), **body.model_dump(exclude={"round"})}
    try:
        return await items.create(db, CHECKPOINTS, fields)
    except AlreadyExists:
        current = await items.get(db, CHECKPOINTS, key(task_id, body.round))
        if current.get(CHECKPOINTS.id_field):
            raise Conflict(
                f"checkpoint {body.round} of task {task_id!r} has its file; checkpoints are immutable"
            ) from None
    unfiled = {**key(task_id, body.round), CHECKPOINTS.id_field: None}
    change = {"$set": {"loss": body.loss, "metrics": body.metrics, "updated_at": items.now()}}
    if not (await db.collection(CHECKPOINTS.collection).update_one(unfiled, change)).matched_count:
        raise Conflict(f"checkpoint {body.round} of task {task_id!r} got its file meanwhile; it is immutable")
    return await items.get(db, CHECKPOINTS, key(task_id, body.round))


async def attachable(db: Database, task_id: str, round_number: int, actor: Actor | None = None) -> dict[str, Any]:
    """The checkpoint a file may be attached to now (what `attach` checks before it reads a byte): `actor`
    holds the running task's claim, the checkpoint exists and has no file yet (Conflict)."""
    return (await _attachable(db, task_id, round_number, actor))[1]


async def _attachable(
    db: Database, task_id: str, round_number: int, actor: Actor | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`attachable`, with the task as read."""
    task = await _writable(db, task_id, actor)
    current = await items.get(db, CHECKPOINTS, key(task_id, round_number))
    if current.get(CHECKPOINTS.id_field):
        raise Conflict(f"checkpoint {round_number} of task {task_id!r} has its file; checkpoints are immutable")
    return task, current


async def attach(
    db: Database,
    task_id: str,
    round_number: int,
    receive: Callable[[], Awaitable[IncomingFile]],
    max_bytes: int,
    condition: FileCondition | None = None,
    actor: Actor | None = None,
    register: CheckpointIn | None = None,
) -> StoredFile:
    """The checkpoint's file, once (its sha256 and size are recorded with it); then the task's `best`
    follows it and older checkpoints are pruned. With `register`, the checkpoint is registered first, as
    `create` would (one request instead of two: a collector's every round write has one)."""
    if register is not None:
        task, current = await _registered(db, task_id, register, actor)
    else:
        task, current = await _attachable(db, task_id, round_number, actor)
    # Only while it has none, checked again by the switch: two uploads cannot both land.
    # The client's own If-Match / If-None-Match still answer 412 as on any upload.
    asked = condition or FileCondition()
    once = FileCondition(exists=False, sha256=asked.sha256, not_sha256=asked.not_sha256)
    where = key(task_id, round_number)
    try:
        stored = await items.attach(db, CHECKPOINTS, where, receive, max_bytes, condition=once, current=current)
    except BaseException:
        if register is not None:  # registered by this request: not left behind without its file
            await db.collection(CHECKPOINTS.collection).delete_one({**where, CHECKPOINTS.id_field: None})
        raise
    best = (task.get("best") or {}).get("round")
    if current.get("loss") is not None:
        if await _better(db, task_id, round_number, float(current["loss"]), current.get("metrics") or {}):
            best = round_number
    # The task as read before the upload says how many to keep, and which round was best then: the
    # task's one collector writes its checkpoints one after the other, so no other changed it since.
    await prune(db, task_id, task, best)
    return stored


async def _better(db: Database, task_id: str, round_number: int, loss: float, metrics: dict[str, Any]) -> bool:
    """Make the checkpoint the task's `best` if it beats it; whether it did."""
    best = {"round": round_number, "loss": loss, "metrics": metrics}
    # Only replaces a worse (or no) best: concurrent checkpoints cannot put back a worse one. Under the
    # task's lock: where the store rewrites the whole document (FerretDB), an update read before a
    # cancel and written after it would put the cancelled task back to Running.
    async with claims.task_lock(db, task_id):
        result = await db.collection(TASKS.collection).update_one(
            {"task_id": task_id, "$or": [{"best": None}, {"best.loss": {"$gt": loss}}]},
            {"$set": {"best": best, "updated_at": items.now()}},
        )
        if result.matched_count:
            task_copies.forget(db, task_id)
    return bool(result.matched_count)


async def prune(db: Database, task_id: str, task: dict[str, Any] | None = None, best: int | None = None) -> list[int]:
    """Remove the checkpoints beyond the task's `checkpoints_kept` newest with a file (and older
    ones that never got their file), keeping the best; return the rounds removed. `task` and `best`:
    the task and its best round as the caller knows them (else read)."""
    if task is None:
        task = await items.get(db, TASKS, {"task_id": task_id})
        best = (task.get("best") or {}).get("round")
    kept = int(task.get("checkpoints_kept") or 3)
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
