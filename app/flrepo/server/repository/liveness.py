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

from flrepo.schemas.tasks import COLLECTOR_LOST, CONDITION_TYPES, DEFAULT_HEARTBEAT_TIMEOUT, Phase
from flrepo.server.repository.kinds import TASKS
from flrepo.server.repository.tasks import lock_key
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
    """Mark Failed (CollectorLost) every Running task whose collector is silent for too long; return their ids."""
    now = now or datetime.now(UTC)
    tasks = db.collection(TASKS.collection)
    projection = {"task_id": 1, "heartbeat": 1, "heartbeat_timeout": 1, "updated_at": 1, "start_time": 1}
    failed = []
    async for doc in tasks.find({"phase": Phase.RUNNING.value}, projection):
        last = last_sign_of_life(doc)
        timeout = float(doc.get("heartbeat_timeout") or DEFAULT_HEARTBEAT_TIMEOUT)
        if last is None or now - last <= timedelta(seconds=timeout):
            continue
        silent = (now - last).total_seconds()
        heartbeat = doc.get("heartbeat") or {}
        who = f" ({heartbeat['collector']})" if heartbeat.get("collector") else ""
        message = (
            f"no heartbeat from the training collector{who} for {silent:.0f} s (heartbeat_timeout "
            f"{timeout:g} s) at round {heartbeat.get('round', 0)}; start a collector for the task again "
            "before the timeout to resume from its last checkpoint"
        )
        change = {
            "$set": {"phase": Phase.FAILED.value, "completion_time": now, "updated_at": now},
            "$push": {
                "conditions": {
                    "type": CONDITION_TYPES[Phase.FAILED],
                    "status": "True",
                    "reason": COLLECTOR_LOST,
                    "message": message,
                    "last_transition_time": now,
                }
            },
        }
        # Exactly as read: a report in between, or another replica's check, makes this match nothing
        # (the lock does the same within one process where the store's updates are not atomic).
        same = {"task_id": doc["task_id"], "phase": Phase.RUNNING.value, "updated_at": doc.get("updated_at")}
        async with db.dialect.item_lock(lock_key(str(doc["task_id"]))):
            result = await tasks.update_one(same, change)
        if result.modified_count:
            log.warning("task %s: %s", doc["task_id"], message)
            failed.append(str(doc["task_id"]))
    return failed


async def watch_tasks_forever(db: Database, interval: float) -> None:
    """Check every `interval` seconds; database outages only delay it."""
    while True:
        try:
            await fail_lost_collectors(db)
        except PyMongoError as exc:
            log.warning("task liveness check skipped: %s", exc)
        await asyncio.sleep(interval)
