"""The records local executions keep in a task: each writes only its own (the same site name sent with the
same API key), never the task's status, which belongs to the collector that claimed it."""

from __future__ import annotations

from typing import Any

from flrepo.schemas.tasks import TERMINAL, Phase, SiteReportIn
from flrepo.server.repository import claims, items, task_copies
from flrepo.server.repository.kinds import TASKS
from flrepo.server.storage.db import Database
from flrepo.server.storage.errors import Busy, Conflict

# Records one task keeps (each at most a few KB): a bound on the document, not on the federation's size.
MAX_SITES = 200


async def put(db: Database, task_id: str, body: SiteReportIn, key_id: str) -> dict[str, Any]:
    """Replace this site's record (by site and key) in a task that has not ended."""
    key = {"task_id": task_id}
    coll = db.collection(TASKS.collection)
    async with claims.task_lock(db, task_id):
        for _ in range(items.SWAP_ATTEMPTS):
            task = await claims.read(db, task_id)
            if Phase(task["phase"]) in TERMINAL:
                raise Conflict(f"task {task_id!r} is {task['phase']}; it takes no more site reports")
            stamp = items.now()
            record = {**body.model_dump(), "key_id": key_id, "time": stamp}
            others = [
                r for r in task.get("site_reports") or [] if (r.get("site"), r.get("key_id")) != (body.site, key_id)
            ]
            if len(others) >= MAX_SITES:
                raise Conflict(f"task {task_id!r} keeps records of {MAX_SITES} sites at most")
            guard = {**key, "updated_at": task.get("updated_at")}
            change = {"$set": {"site_reports": [*others, record], "updated_at": stamp}}
            if (await coll.update_one(guard, change)).matched_count:
                task_copies.forget(db, task_id)
                return await items.get(db, TASKS, key)
    raise Busy(f"task {task_id!r} is being updated too often; try again")
