"""Tasks whose collector is gone: a Running task without a heartbeat (any status report of its
collector) for longer than its `heartbeat_timeout` is marked Failed with reason CollectorLost.

Every API replica runs the check; the update is conditional on the task being exactly as read
(Running, same `updated_at`), so one replica wins, and a collector that reported meanwhile (or a
restarted one that resumed) keeps its task.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import PyMongoError

from flrepo.schemas.tasks import COLLECTOR_LOST, DEFAULT_HEARTBEAT_TIMEOUT, Phase
from flrepo.server.repository import task_copies, task_ends
from flrepo.server.repository.claims import task_lock
from flrepo.server.repository.kinds import TASKS
from flrepo.server.repository.task_states import CONDITION_TYPES
from flrepo.server.repository.tasks import bounded_conditions
from flrepo.server.storage.db import Database

log = logging.getLogger(__name__)


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def last_sign_of_life(doc: dict[str, Any]) -> datetime | None:
    """The last heartbeat; for tasks from before heartbeats, the last update or the start."""
    heartbeat = doc.get("heartbeat") or {}
    return _aware(heartbeat.get("time")) or _aware(doc.get("updated_at")) or _aware(doc.get("start_time"))


async def fail_lost_collectors(db: Database, now: datetime | None = None) -> list[str]:
    """Mark Failed (CollectorLost) every Running task whose collector is silent for too long; return their ids.

    A task that cannot be updated (a document the store refuses to grow, a broken field) is logged and
    skipped: the others are still checked."""
    now = now or datetime.now(UTC)
    tasks = db.collection(TASKS.collection)
    projection = {"task_id": 1, "heartbeat": 1, "heartbeat_timeout": 1, "updated_at": 1, "start_time": 1}
    failed = []
    async for doc in tasks.find({"phase": Phase.RUNNING.value}, projection):
        last = last_sign_of_life(doc)
        timeout = float(doc.get("heartbeat_timeout") or DEFAULT_HEARTBEAT_TIMEOUT)
        if last is None or now - last <= timedelta(seconds=timeout):
            continue
        try:
            if await _fail_lost(db, doc, now, (now - last).total_seconds(), timeout):
                failed.append(str(doc["task_id"]))
        except Exception:
            log.exception("task %s: could not mark its lost collector; checking the other tasks", doc.get("task_id"))
    return failed


async def _fail_lost(db: Database, doc: dict[str, Any], now: datetime, silent: float, limit_s: float) -> bool:
    """Mark one silent task Failed (CollectorLost), unless it changed since it was read."""
    heartbeat = doc.get("heartbeat") or {}
    who = f" ({heartbeat['collector']})" if heartbeat.get("collector") else ""
    message = (
        f"no heartbeat from the training collector{who} for {silent:.0f} s (heartbeat_timeout "
        f"{limit_s:g} s) at round {heartbeat.get('round', 0)}; start a collector for the task again "
        "before the timeout to resume from its last checkpoint"
    )
    condition = {
        "type": CONDITION_TYPES[Phase.FAILED],
        "status": "True",
        "reason": COLLECTOR_LOST,
        "message": message,
        "last_transition_time": now,
    }
    tasks = db.collection(TASKS.collection)
    # Exactly as read: a report in between, or another replica's check, makes this match nothing
    # (the lock does the same within one process where the store's updates are not atomic).
    same = {"task_id": doc["task_id"], "phase": Phase.RUNNING.value, "updated_at": doc.get("updated_at")}
    async with task_lock(db, str(doc["task_id"])):
        current = await tasks.find_one(same, {"conditions": 1})
        if current is None:
            return False
        conditions = bounded_conditions(list(current.get("conditions") or []), condition)
        change = {
            "$set": {
                "phase": Phase.FAILED.value,
                "completion_time": now,
                "updated_at": now,
                "conditions": conditions,
            }
        }
        result = await tasks.update_one(same, change)
        task_copies.forget(db, str(doc["task_id"]))
    if result.modified_count:
        log.warning("task %s: %s", doc["task_id"], message)
        task_ends.ended_now(db, str(doc["task_id"]))
    return bool(result.modified_count)


async def watch_tasks_forever(db: Database, interval: float) -> None:
    """Check every `interval` seconds; database outages only delay it."""
    while True:
        try:
            await fail_lost_collectors(db)
        except PyMongoError as exc:
            log.warning("task liveness check skipped: %s", exc)
        await asyncio.sleep(interval)
