"""Waiting for a task's end: `GET /tasks/{id}?wait_end=S` holds its answer until the task is
Succeeded or Failed, or S seconds pass, so that a local execution learns its task's end at once
with one request every S seconds instead of asking every few seconds.

A change this process makes (a status report, a cancel, the liveness check) wakes the waiters of
that task at once; a change made by another replica is seen at the next re-read, every
RECHECK_SECONDS (a read of the task's phase alone).
"""

from __future__ import annotations

import asyncio
from typing import Any

from flrepo.schemas.tasks import TERMINAL, Phase
from flrepo.server.repository.kinds import TASKS
from flrepo.server.storage.db import Database

# The longest a request may be held: under common proxies' read timeouts (nginx's 60 s) and the
# SDK's default of 60 s.
MAX_WAIT_SECONDS = 25.0
# How often a held request re-reads the task's phase (another replica's change, a deleted task).
RECHECK_SECONDS = 10.0

_waiting: dict[tuple[str, str], set[asyncio.Event]] = {}


def _key(db: Database, task_id: str) -> tuple[str, str]:
    return (db.meta.name, task_id)


def ended_now(db: Database, task_id: str) -> None:
    """The task has just ended (or changed in a way its waiters must see): wake them."""
    for event in _waiting.get(_key(db, task_id), ()):
        event.set()


async def _ended(db: Database, task_id: str) -> bool:
    doc: dict[str, Any] | None = await db.collection(TASKS.collection).find_one({"task_id": task_id}, {"phase": 1})
    return doc is None or Phase(doc["phase"]) in TERMINAL


async def wait_end(db: Database, task_id: str, seconds: float) -> None:
    """Return when the task has ended (or is gone), at the latest after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(seconds, MAX_WAIT_SECONDS)
    event = asyncio.Event()
    waiters = _waiting.setdefault(_key(db, task_id), set())
    waiters.add(event)
    try:
        while not await _ended(db, task_id):
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(event.wait(), min(left, RECHECK_SECONDS))
            except TimeoutError:
                pass
            event.clear()
    finally:
        waiters.discard(event)
        if not waiters:
            _waiting.pop(_key(db, task_id), None)
