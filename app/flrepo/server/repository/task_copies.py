"""The task as this process last wrote it, so that the next status report need not read it first.

A collector reports every round, and on the embedded store reading the task decodes the whole document:
about half of what the update costs it (bench/task_reports). A copy is only a guess at what the store
holds: a report writes with a compare-and-swap on the task's `updated_at` (and phase), which every writer
of a task sets, so a copy that another writer made stale (another replica, a site report, a checkpoint, a
cancel) matches nothing and the report reads the task then. Writers in this process forget the copy
after they write, so that the next report reads at once instead of trying the stale copy first.

`take` removes the copy: a report that fails midway leaves none behind. Bounded: the tasks least
recently written are dropped first.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

from flrepo.server.storage.db import Database

# Tasks with a copy, per database handle: enough for every task running at once on one service.
MAX_TASKS = 128

# By the handle's identity (two handles on one store are two processes' worth of copies, as two replicas
# would have); an entry goes with its handle.
_copies: dict[int, OrderedDict[str, dict[str, Any]]] = {}


def _created(db: Database) -> OrderedDict[str, dict[str, Any]]:
    copies = _copies.get(id(db))
    if copies is None:
        copies = _copies[id(db)] = OrderedDict()
        weakref.finalize(db, _copies.pop, id(db), None)
    return copies


def take(db: Database, task_id: str) -> dict[str, Any] | None:
    """The task as this process last wrote it (removed from the copies), or None."""
    copies = _copies.get(id(db))
    return copies.pop(task_id, None) if copies is not None else None


def keep(db: Database, task_id: str, task: dict[str, Any]) -> None:
    """Remember `task`, exactly as the store returned it after this process's write (a shallow copy:
    nested values are shared and must not be changed)."""
    copies = _created(db)
    copies[task_id] = dict(task)
    copies.move_to_end(task_id)
    while len(copies) > MAX_TASKS:
        copies.popitem(last=False)


def forget(db: Database, task_id: str) -> None:
    """Drop the copy of a task just changed by another kind of write."""
    copies = _copies.get(id(db))
    if copies is not None:
        copies.pop(task_id, None)
