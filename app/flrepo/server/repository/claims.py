"""Task claims: a task is steered only by the collector that claimed it.

A collector starting for a task claims it (`claim`, a compare-and-swap on the task) and gets a random
task token, shown once and stored as its sha256 (`claim_sha256`, never shown). Status reports,
heartbeats, checkpoints and the publication of the task's output then need that token (or an admin
key): `check`. A claim holds while the collector heartbeats; after the task's `heartbeat_timeout`
without one (counted from the claim for a task that never reported) another collector may claim it.
A restarted collector that kept its token re-claims at once with it, so a resume never waits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flrepo.schemas.tasks import DEFAULT_HEARTBEAT_TIMEOUT, TERMINAL, ClaimIn, Phase
from flrepo.server.repository import items, task_copies
from flrepo.server.repository.kinds import TASKS
from flrepo.server.storage.db import Database
from flrepo.server.storage.errors import Busy, Conflict, Forbidden

TOKEN_FIELD = "claim_sha256"
TOKEN_HEADER = "X-Task-Token"


@dataclass(frozen=True)
class Actor:
    """Who writes to a task: the API key's id, whether it is an admin's, and the task token it sent."""

    key_id: str
    admin: bool = False
    token: str | None = None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def holds(task: dict[str, Any], token: str | None) -> bool:
    """Whether `token` is the task's current claim token (compared in constant time)."""
    stored = task.get(TOKEN_FIELD)
    return bool(stored and token and hmac.compare_digest(str(stored), token_hash(token)))


def check(task: dict[str, Any], actor: Actor) -> None:
    """Forbidden unless `actor` holds the task's claim (or is an admin)."""
    if actor.admin or holds(task, actor.token):
        return
    task_id = task.get("task_id")
    if not task.get(TOKEN_FIELD):
        raise Forbidden(
            f"task {task_id!r} is not claimed: its collector claims it (POST /tasks/{task_id}/claim) and sends "
            f"the task token it gets in {TOKEN_HEADER}; an admin key may act without one"
        )
    who = (task.get("claimed_by") or {}).get("collector") or "another collector"
    sent = "a wrong task token" if actor.token else f"no task token ({TOKEN_HEADER})"
    raise Forbidden(
        f"task {task_id!r} belongs to the collector that claimed it ({who}); this request sent {sent}. "
        "Only that collector's token, or an admin key, may change its status, heartbeats, checkpoints and output"
    )


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def last_sign(task: dict[str, Any]) -> datetime | None:
    """The claim's last sign of life: its latest heartbeat, or the claim itself."""
    times = [_aware((task.get("heartbeat") or {}).get("time")), _aware((task.get("claimed_by") or {}).get("time"))]
    found = [t for t in times if t is not None]
    return max(found) if found else None


def timeout_of(task: dict[str, Any]) -> float:
    return float(task.get("heartbeat_timeout") or DEFAULT_HEARTBEAT_TIMEOUT)


def lapsed(task: dict[str, Any], now: datetime) -> bool:
    """No live claim: none made, or its collector silent for longer than the task's heartbeat_timeout."""
    if not task.get(TOKEN_FIELD):
        return True
    last = last_sign(task)
    return last is None or now - last > timedelta(seconds=timeout_of(task))


def task_lock(db: Database, task_id: str) -> AbstractAsyncContextManager[None]:
    """The lock every read-modify-write of a task's document takes (its claim, status, site reports, best
    checkpoint, liveness) where the store's updates are not atomic: one key for all of them."""
    return db.dialect.item_lock((TASKS.collection, task_id))


async def claim(db: Database, task_id: str, body: ClaimIn, key_id: str, admin: bool = False) -> dict[str, Any]:
    """Claim a task that is not finished: a new token when no live claim holds it, the same one when
    `body.token` is the current claim's. Conflict while another live claim holds it or the task has
    ended; Forbidden for a token that is not the task's, or a key the task's `collector_keys` leave out."""
    key = {"task_id": task_id}
    coll = db.collection(TASKS.collection)
    async with task_lock(db, task_id):
        for _ in range(items.SWAP_ATTEMPTS):
            task = await read(db, task_id)
            allowed = task.get("collector_keys") or []
            if allowed and not admin and key_id not in allowed:
                raise Forbidden(f"task {task_id!r} may be claimed only with the API keys {allowed} (collector_keys)")
            if Phase(task["phase"]) in TERMINAL:
                raise Conflict(f"task {task_id!r} is {task['phase']}; there is nothing to claim")
            stamp = items.now()
            token = _token_for(task, body, stamp)
            claimed_by = {"collector": body.collector, "key_id": key_id, "time": stamp}
            change = {"$set": {TOKEN_FIELD: token_hash(token), "claimed_by": claimed_by, "updated_at": stamp}}
            guard = {**key, "phase": task["phase"], "updated_at": task.get("updated_at")}
            if (await coll.update_one(guard, change)).matched_count:
                task_copies.forget(db, task_id)
                return {
                    "task_id": task_id,
                    "token": token,
                    "claimed_by": claimed_by,
                    "lapses_after_s": timeout_of(task),
                }
    raise Busy(f"task {task_id!r} is being updated too often; try again")


async def read(db: Database, task_id: str) -> dict[str, Any]:
    """The task without its round records (the part a claim or a token check needs); NotFound if none."""
    key = {"task_id": task_id}
    doc = await db.collection(TASKS.collection).find_one(key, {"_id": 0, "history": 0})
    if doc is None:
        raise TASKS.not_found(key)
    return dict(doc)


async def authorize(db: Database, task_id: str, actor: Actor) -> dict[str, Any]:
    """The task (without round records) if `actor` may write to it; NotFound, Forbidden otherwise."""
    task = await read(db, task_id)
    check(task, actor)
    return task


def _token_for(task: dict[str, Any], body: ClaimIn, stamp: datetime) -> str:
    if body.token is not None:
        if not holds(task, body.token):
            raise Forbidden(f"that is not the task token of task {task['task_id']!r}; claim without one")
        return body.token
    if not lapsed(task, stamp):
        holder = task.get("claimed_by") or {}
        last = last_sign(task)
        left = timeout_of(task) - (stamp - last).total_seconds() if last else 0.0
        raise Conflict(
            f"task {task['task_id']!r} is claimed by {holder.get('collector') or 'a collector'} "
            f"(key {holder.get('key_id')!r}); the claim lapses {max(0.0, left):.0f} s after its last heartbeat "
            "unless it reports again. A restarted collector re-claims with its token"
        )
    return secrets.token_urlsafe(32)
