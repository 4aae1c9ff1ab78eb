"""FL tasks in the store: creation with checked references, status updates through the phase
machine (flrepo.server.repository.task_states), cancelling, deletion of tasks that are not running. Every status
report is also the collector's heartbeat (flrepo.server.repository.liveness fails tasks whose
collector stopped reporting)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

from pymongo import ReturnDocument

from flrepo.schemas.identifiers import MAX_IDENTIFIER
from flrepo.schemas.tasks import CANCELLED, TERMINAL, Phase, StatusUpdate, TaskIn, output_version
from flrepo.server.repository import (
    checkpoints,
    claims,
    items,
    outputs,
    rounds,
    task_copies,
    task_ends,
    task_privacy,
)
from flrepo.server.repository.claims import Actor
from flrepo.server.repository.items import Page
from flrepo.server.repository.kinds import MODELS, STRATEGIES, TASKS, TRANSFORMATIONS, Kind
from flrepo.server.repository.task_states import InvalidTransition, initial_status, transition
from flrepo.server.storage.db import Database
from flrepo.server.storage.errors import AlreadyExists, Busy, Conflict, Forbidden, Invalid, NotFound, TooLarge

# Conditions kept besides the latest of each type (flrepo.server.repository.task_states.CONDITION_TYPES).
CONDITIONS_TAIL = 16
DEFAULT_REPORT_BYTES = 256 * 1024
# Round records the task document keeps at hand besides their collection (what GET /tasks/{id} shows).
RECENT_ROUNDS = 100


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
    """The sha256 and size of the item's file now (None: no file). Recorded at upload; for items that
    have none recorded (restored from aerOS) computed from the stored bytes once, and recorded."""
    try:
        view = await items.open_file(db, kind, key)
    except NotFound:
        return {"sha256": None, "size": None}
    sha = view.sha256
    if sha is None:
        sha = await _record_digest(db, kind, key, view)
    return {"sha256": sha, "size": view.size}


# One hashing per item at a time in this process: concurrent task creations wait for it, then read
# the recorded digest instead of reading the file again.
_hashing: dict[tuple[str, str], asyncio.Lock] = {}


async def _record_digest(db: Database, kind: Kind, key: dict[str, Any], view: items.FileView) -> str:
    ident = (kind.collection, json.dumps(key, sort_keys=True))
    lock = _hashing.setdefault(ident, asyncio.Lock())
    try:
        async with lock:
            again = await items.open_file(db, kind, key)
            if again.sha256 is not None:  # recorded while this request waited
                return again.sha256
            digest = hashlib.sha256()
            async for chunk in again.read():
                digest.update(chunk)
            sha = digest.hexdigest()
            # Recorded only for the file it was computed from (a replacement meanwhile records its own).
            same_file = {**key, kind.id_field: again.item.get(kind.id_field)}
            async with items.item_lock(db, kind, key):  # not to undo a file switch (see items.update)
                await db.collection(kind.collection).update_one(same_file, {"$set": {"sha256": sha}})
            return sha
    finally:
        if not lock.locked():
            _hashing.pop(ident, None)


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
    await task_privacy.check(db, body)
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
    reserved = await outputs.reserving_model(db, output["model_name"], output["model_version"])
    if reserved is not None:
        raise AlreadyExists(
            f"the trained model would be {MODELS.describe(output)}, which task {reserved['task_id']!r} will "
            "publish; choose another output_model_version"
        )
    doc["output"] = output  # reserved: only this task's collector may create it (flrepo.server.repository.outputs)
    doc["pins"] = await pins(db, body)
    doc.update(initial_status())
    return await items.create(db, TASKS, doc)


async def get(db: Database, task_id: str, *, history: int) -> dict[str, Any]:
    """The task with only its `history` most recent round records (all of them are paged by history_page)."""
    return await shown(db, await items.get(db, TASKS, _key(task_id)), history)


async def page(db: Database, *, phase: Phase | None, limit: int, offset: int, history: int = 0) -> Page:
    """Tasks, each with its `history` most recent round records (none by default: a list stays small)."""
    query = {"phase": phase.value} if phase else {}
    found = await items.page(db, TASKS, query=query, limit=limit, offset=offset, projection={"history": 0})
    return Page(items=[await shown(db, doc, history) for doc in found.items], total=found.total)


async def history_page(db: Database, task_id: str, *, limit: int, offset: int) -> Page:
    """The task's kept round records, oldest first."""
    task = await items.get(db, TASKS, _key(task_id))
    embedded = task.get("history")
    if embedded:  # written before round records had their own collection
        return Page(items=embedded[offset : offset + limit], total=len(embedded))
    found, total = await rounds.page(db, task_id, limit=limit, offset=offset)
    return Page(items=found, total=total)


async def shown(db: Database, doc: dict[str, Any], history: int) -> dict[str, Any]:
    """`doc` with only its `history` most recent round records, and how many it keeps."""
    embedded = doc.pop("history", None)
    for internal in ("history_seq", claims.TOKEN_FIELD, "output"):  # kept for the service, never shown
        doc.pop(internal, None)
    if embedded:  # written before round records had their own collection
        doc["history_total"] = len(embedded)
        doc["history"] = embedded[-history:] if history else []
        return doc
    doc.setdefault("history_total", 0)
    recent = doc.pop("recent_rounds", None) or []
    if history <= len(recent) or len(recent) >= doc["history_total"]:
        doc["history"] = recent[-history:] if history else []
    else:  # more than the task keeps at hand
        doc["history"] = await rounds.latest(db, doc["task_id"], history)
    return doc


def bounded_conditions(conditions: list[dict[str, Any]], added: dict[str, Any]) -> list[dict[str, Any]]:
    """`conditions` plus `added`, coalesced: the latest condition of every type, and of the others the
    CONDITIONS_TAIL most recent (a task reporting forever keeps a fixed number)."""
    every = [*conditions, added]
    latest = {c.get("type"): n for n, c in enumerate(every)}
    tail = set(range(max(0, len(every) - CONDITIONS_TAIL), len(every)))
    return [c for n, c in enumerate(every) if n in tail or n in latest.values()]


def check_report_size(update: StatusUpdate, *, record_bytes: int, report_bytes: int) -> None:
    """TooLarge for a round record over `record_bytes` or a whole report over `report_bytes` (as JSON)."""
    for record in [*(update.round_records or []), *([update.round] if update.round is not None else [])]:
        size = len(json.dumps(record.model_dump(mode="json")))
        if size > record_bytes:
            raise TooLarge(f"a round record of {size} bytes; at most {record_bytes} (FLREPO_TASK_RECORD_BYTES)")
    size = len(update.model_dump_json(exclude_none=True))
    if size > report_bytes:
        raise TooLarge(f"a status report of {size} bytes; at most {report_bytes} (FLREPO_TASK_REPORT_BYTES)")


async def report(
    db: Database,
    task_id: str,
    update: StatusUpdate,
    *,
    keep_rounds: int,
    record_bytes: int,
    report_bytes: int = DEFAULT_REPORT_BYTES,
    actor: Actor | None = None,
) -> dict[str, Any]:
    """Apply a collector's status update; Conflict when the phase does not allow it, Forbidden when
    `actor` does not hold the task's claim (None: the service itself, e.g. a cancel).

    A round record is appended to the history, which keeps the `keep_rounds` most recent records;
    conditions are coalesced (bounded_conditions); a record larger than `record_bytes` or a report
    larger than `report_bytes` (as JSON) is TooLarge. The update is a compare-and-swap on the task's
    last change, repeated when another update came first (then the phase rules are applied again to
    what that update left). It starts from the task as this process last wrote it when it has it
    (flrepo.server.repository.task_copies), else from the task as read.
    """
    check_report_size(update, record_bytes=record_bytes, report_bytes=report_bytes)
    # What the report adds to the task, for the store's rules (Dialect.check_document): the rest of the
    # update was read from this store, which held it (a hundred round records and the conditions).
    added = update.model_dump(exclude_none=True)
    key = _key(task_id)
    coll = db.collection(TASKS.collection)
    # Where the store's updates are not atomic (FerretDB), the lock keeps two transitions (a
    # collector's end and a cancel, say) from both passing the guard below.
    async with claims.task_lock(db, task_id):
        copy = task_copies.take(db, task_id)
        reads = 0
        while reads < items.SWAP_ATTEMPTS:
            guessed = copy is not None
            if copy is not None:
                current, copy = copy, None
            else:
                current = await items.get(db, TASKS, key)
                reads += 1
            try:
                if actor is not None:
                    claims.check(current, actor)
                change, phase_now, appended = _change(current, update, keep_rounds)
            except (Forbidden, Conflict):
                if guessed:  # refused by what may be stale: decided on the task as stored
                    continue
                raise
            db.dialect.check_document(added)
            # Matches only the task as read (or as last written here): any update since, of any writer, makes
            # this match nothing, and we retry on the task as read then.
            guard = {**key, "phase": phase_now.value, "updated_at": current.get("updated_at")}
            # The task as updated comes back with the update (no read after it: a report is a collector's
            # every round, and 30 sites' processes leave the store's round trips slow).
            updated = await coll.find_one_and_update(guard, change, return_document=ReturnDocument.AFTER)
            if updated is not None:
                updated.pop("_id", None)
                task_copies.keep(db, task_id, updated)
                # The sequence numbers are this update's alone: no other update read the same task.
                await rounds.append(db, task_id, int(current.get("history_seq") or 0) + 1, appended, keep_rounds)
                if update.phase in TERMINAL:  # held GET /tasks/{id}?wait_end answer now
                    task_ends.ended_now(db, task_id)
                return updated
    raise Busy(f"task {task_id!r} is being updated too often; try again")


def _change(
    current: dict[str, Any], update: StatusUpdate, keep_rounds: int
) -> tuple[dict[str, Any], Phase, list[dict[str, Any]]]:
    """The update of `current` that applies `update` (Conflict when its phase does not allow it), and the
    round records to append (flrepo.server.repository.rounds) once it is applied."""
    phase_now = Phase(current["phase"])
    stamp = items.now()
    try:
        fields, pushes = transition(phase_now, update, stamp)
    except InvalidTransition as exc:
        raise Conflict(f"task {current['task_id']!r} {exc}") from None
    if fields["phase"] == Phase.RUNNING.value:
        # Every report of a running task is its collector's heartbeat, with the round it is at.
        round_now = update.current_round if update.current_round is not None else current.get("current_round", 0)
        fields["heartbeat"] = {"time": stamp, "round": round_now, "collector": update.collector}
    change: dict[str, Any] = {"$set": {**fields, "updated_at": stamp}}
    condition = pushes.pop("conditions", None)
    if condition is not None:
        change["$set"]["conditions"] = bounded_conditions(current.get("conditions") or [], condition)
    records: list[dict[str, Any]] = pushes.pop("history", None) or []
    appended: list[dict[str, Any]] = []
    if records:
        # Records kept in the task by earlier versions move to their collection with these.
        appended = [*(current.get("history") or []), *records]
        total = int(current.get("history_total") or 0) if not current.get("history") else 0
        change["$set"]["history_total"] = min(total + len(appended), keep_rounds)
        change["$set"]["history_seq"] = int(current.get("history_seq") or 0) + len(appended)
        # The newest few, at hand for GET /tasks/{id} and this answer without a query (bounded like conditions).
        recent = [*(current.get("recent_rounds") or []), *appended][-min(RECENT_ROUNDS, keep_rounds) :]
        change["$set"]["recent_rounds"] = recent
        if current.get("history") is not None:
            change["$unset"] = {"history": ""}
    return change, phase_now, appended


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
    task_copies.forget(db, task_id)
    await checkpoints.delete_all(db, task_id)
    await rounds.delete_all(db, task_id)
