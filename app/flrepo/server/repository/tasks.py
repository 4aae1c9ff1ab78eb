"""FL tasks in the store: creation with checked references, status updates through the phase
machine (flrepo.schemas.tasks), cancelling, deletion of tasks that are not running. Every status
report is also the collector's heartbeat (flrepo.server.repository.liveness fails tasks whose
collector stopped reporting)."""

from __future__ import annotations

import hashlib
import json
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
from flrepo.server.storage.errors import AlreadyExists, Busy, Conflict, Invalid, NotFound, TooLarge


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


async def _pin(db: Database, kind: Kind, key: dict[str, Any]) -> dict[str, Any]:
    """The sha256 and size of the item's file now (None: no file). Recorded at upload; computed from the
    stored bytes for items that have none recorded (restored from aerOS)."""
    try:
        view = await items.open_file(db, kind, key)
    except NotFound:
        return {"sha256": None, "size": None}
    sha = view.sha256
    if sha is None:
        digest = hashlib.sha256()
        async for chunk in view.read():
            digest.update(chunk)
        sha = digest.hexdigest()
    return {"sha256": sha, "size": view.size}


async def pins(db: Database, body: TaskIn) -> dict[str, Any]:
    """The digests a task created now pins (flrepo.schemas.tasks.Pins)."""
    return {
        "model": await _pin(db, MODELS, body.model.model_dump()),
        "strategy": await _pin(db, STRATEGIES, body.strategy.model_dump()),
        "transformations": [
            {"id": ref_id, **await _pin(db, TRANSFORMATIONS, {"id": ref_id})}
            for ref_id in dict.fromkeys(ref.id for ref in body.transformations)
        ],
    }


async def create(db: Database, body: TaskIn) -> dict[str, Any]:
    """Register a plan, Pending, after checking that everything it names exists; the digests of its
    model, strategy and transformations are pinned, so what runs is what was planned."""
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
    doc["pins"] = await pins(db, body)
    doc.update(initial_status())
    return await items.create(db, TASKS, doc)


async def get(db: Database, task_id: str, *, history: int) -> dict[str, Any]:
    """The task with only its `history` most recent round records (all of them are paged by history_page)."""
    return shown(await items.get(db, TASKS, _key(task_id)), history)


async def page(db: Database, *, phase: Phase | None, limit: int, offset: int, history: int = 0) -> Page:
    """Tasks, each with its `history` most recent round records (none by default: a list stays small)."""
    query = {"phase": phase.value} if phase else {}
    projection = None if history else {"history": 0}
    found = await items.page(db, TASKS, query=query, limit=limit, offset=offset, projection=projection)
    return Page(items=[shown(doc, history) for doc in found.items], total=found.total)


async def history_page(db: Database, task_id: str, *, limit: int, offset: int) -> Page:
    """The task's kept round records, oldest first."""
    kept = (await items.get(db, TASKS, _key(task_id))).get("history") or []
    return Page(items=kept[offset : offset + limit], total=len(kept))


def shown(doc: dict[str, Any], history: int) -> dict[str, Any]:
    """`doc` with only its `history` most recent round records, and how many it keeps."""
    kept = doc.get("history")
    if kept is not None:
        doc["history_total"] = len(kept)  # documents written before the count was kept have none
        doc["history"] = kept[-history:] if history else []
    else:
        doc["history"] = []
        doc.setdefault("history_total", 0)
    return doc


async def report(
    db: Database, task_id: str, update: StatusUpdate, *, keep_rounds: int, record_bytes: int
) -> dict[str, Any]:
    """Apply a collector's status update; Conflict when the phase does not allow it.

    A round record is appended to the history, which keeps the `keep_rounds` most recent records;
    one larger than `record_bytes` (as JSON) is TooLarge. The update is a compare-and-swap on the
    task's last change, repeated when another update came first (then the phase rules are applied
    again to what that update left).
    """
    if update.round is not None:
        size = len(json.dumps(update.round.model_dump(mode="json")))
        if size > record_bytes:
            raise TooLarge(f"a round record of {size} bytes; at most {record_bytes} (FLREPO_TASK_RECORD_BYTES)")
    key = _key(task_id)
    coll = db.collection(TASKS.collection)
    # Where the store's updates are not atomic (FerretDB), the lock keeps two transitions (a
    # collector's end and a cancel, say) from both passing the guard below.
    async with db.dialect.item_lock(lock_key(task_id)):
        for _ in range(items.SWAP_ATTEMPTS):
            current = await items.get(db, TASKS, key)
            phase_now = Phase(current["phase"])
            stamp = items.now()
            try:
                fields, pushes = transition(phase_now, update, stamp)
            except InvalidTransition as exc:
                raise Conflict(f"task {task_id!r} {exc}") from None
            if fields["phase"] == Phase.RUNNING.value:
                # Every report of a running task is its collector's heartbeat, with the round it is at.
                round_now = (
                    update.current_round if update.current_round is not None else current.get("current_round", 0)
                )
                fields["heartbeat"] = {"time": stamp, "round": round_now, "collector": update.collector}
            change: dict[str, Any] = {"$set": {**fields, "updated_at": stamp}}
            record = pushes.pop("history", None)
            if record is not None:
                kept = [*(current.get("history") or []), record][-keep_rounds:]
                change["$set"].update(history=kept, history_total=len(kept))
            if pushes:
                change["$push"] = pushes
            db.dialect.check_document(change)
            # Matches only the task as read: a concurrent update makes this match nothing, and we retry.
            guard = {**key, "phase": phase_now.value, "updated_at": current.get("updated_at")}
            if (await coll.update_one(guard, change)).matched_count:
                return await items.get(db, TASKS, key)
    raise Busy(f"task {task_id!r} is being updated too often; try again")


def lock_key(task_id: str) -> tuple[str, str]:
    return (TASKS.collection, task_id)


async def cancel(
    db: Database, task_id: str, message: str | None, *, keep_rounds: int, record_bytes: int
) -> dict[str, Any]:
    """End a Pending or Running task: Failed with reason Cancelled. Its collector sees it at its next
    heartbeat and stops; Conflict when the task has ended already."""
    current = await items.get(db, TASKS, _key(task_id))
    if Phase(current["phase"]) in TERMINAL:
        raise Conflict(f"task {task_id!r} is {current['phase']} already; nothing to cancel")
    update = StatusUpdate(phase=Phase.FAILED, reason=CANCELLED, message=message)
    return await report(db, task_id, update, keep_rounds=keep_rounds, record_bytes=record_bytes)


async def delete(db: Database, task_id: str) -> None:
    """Delete a task that is not running (Conflict while it runs, NotFound when there is none)."""
    key = _key(task_id)
    result = await db.collection(TASKS.collection).delete_one({**key, "phase": {"$ne": Phase.RUNNING.value}})
    if result.deleted_count == 0:
        await items.get(db, TASKS, key)  # NotFound when it does not exist
        raise Conflict(f"task {task_id!r} is Running; cancel it first (POST /tasks/{task_id}/cancel)")
    await checkpoints.delete_all(db, task_id)
