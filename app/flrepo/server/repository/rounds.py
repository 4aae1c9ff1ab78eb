"""A task's round records, one document each in `task_rounds` (task_id, seq), beside the task: a report
appends one (an insert, never a rewrite of the task), the oldest beyond the kept number are deleted, and
the task document keeps the count (`history_total`), the last sequence number (`history_seq`) and the
newest few records (`recent_rounds`, flrepo.server.repository.tasks.RECENT_ROUNDS) for GET /tasks/{id}.
Its size and the cost of a report therefore do not grow with the rounds. Tasks written before kept their
records in the task document (`history`): those are moved here at the task's next round record."""

from __future__ import annotations

from typing import Any

from flrepo.server.storage.db import ROUNDS, Database

BY_SEQ = [("seq", 1)]
_FIELDS = {"_id": 0, "task_id": 0, "seq": 0}


def _coll(db: Database) -> Any:
    return db.collection(ROUNDS)


async def append(db: Database, task_id: str, first_seq: int, records: list[dict[str, Any]], keep: int) -> None:
    """Store `records` as sequence numbers first_seq, first_seq + 1, ...; drop those beyond the newest `keep`."""
    if not records:
        return
    docs = [{"task_id": task_id, "seq": first_seq + n, **record} for n, record in enumerate(records)]
    await _coll(db).insert_many(docs, ordered=True)
    # One exact key each (no range scan: the embedded store pushes only equalities down to its index).
    for seq in range(max(1, first_seq - keep), first_seq + len(records) - keep):
        await _coll(db).delete_one({"task_id": task_id, "seq": seq})


async def latest(db: Database, task_id: str, count: int) -> list[dict[str, Any]]:
    """The `count` most recent records, oldest first."""
    if count <= 0:
        return []
    cursor = _coll(db).find({"task_id": task_id}, _FIELDS).sort("seq", -1).limit(count)
    found = [doc async for doc in cursor]
    return found[::-1]


async def page(db: Database, task_id: str, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Records oldest first, a page at a time, and how many are kept."""
    total = await _coll(db).count_documents({"task_id": task_id})
    cursor = _coll(db).find({"task_id": task_id}, _FIELDS).sort(BY_SEQ).skip(offset).limit(limit)
    return [doc async for doc in cursor], total


async def delete_all(db: Database, task_id: str) -> None:
    await _coll(db).delete_many({"task_id": task_id})
