"""What the store does fast, measured with `explain` at first contact, not assumed from its name.

A GridFS read is `find({files_id, n: {$gte, $lte}}).sort(n)`. MongoDB answers it from the (files_id, n)
index in order. FerretDB with tools/ferretdb's pushdown patch does too (its `sortPushdown`), and searches
that index for key look-ups (`{files_id, n}` and `{files_id, n: {$in: [...]}}`), which flrepo reads it
with (two in flight: faster there than one cursor); an older patch sorted the range in memory, and as
released FerretDB uses no index at all. `explain` shows each of these, so the read strategy
(dialect.ChunkReads) follows from what the server says it will do.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from flrepo.server.storage.dialect import ChunkReads

log = logging.getLogger(__name__)

# Chunks per look-up where `$in` is served by the index: ~4 MiB per query with 255 KiB chunks.
KEY_BATCH = 16
# SQLite's plan line for a search of both columns of the chunk index (FerretDB's explain).
_BOTH_COLUMNS = re.compile(r"USING (COVERING )?INDEX \S*files_id_1_n_1 \(<expr>=\? AND <expr>=\?")


async def chunk_reads(grid: AsyncDatabase) -> tuple[ChunkReads, int, bool]:
    """(strategy, chunks per look-up, other sorted queries stream) for this store's fs.chunks.

    The last is whether a sort on `_id` (list pages) and a descending one on `n` (the sweep's last
    chunk) come from the indexes too, as on MongoDB; the patched FerretDB streams only GridFS's
    ascending chunk order (tools/ferretdb/README.md) and sorts anything else in memory.
    """
    probe_id = ObjectId()  # no such file: explain only plans
    try:
        batch = await _explain(grid, {"files_id": probe_id, "n": {"$in": list(range(KEY_BATCH))}}, None)
        if _sqlite_plan(batch) and _searches_both_columns(batch):
            # FerretDB with the patch: it streams the sorted range too, but one cursor leaves its work and
            # ours in turn (1 GiB downloads at 0.83x the driver's read, bench/RESULTS.md #21), while two
            # look-ups in flight overlap them.
            return ChunkReads.KEYS, KEY_BATCH, False
        ranged = await _explain(grid, {"files_id": probe_id, "n": {"$gte": 0, "$lte": 3}}, {"n": 1})
        if _streams_sorted(ranged):
            by_id = await _explain(grid, {}, {"_id": 1})
            backwards = await _explain(grid, {"files_id": probe_id}, {"n": -1})
            return ChunkReads.RANGE, 1, _streams_sorted(by_id) and _streams_sorted(backwards)
        if _searches_both_columns(batch):
            return ChunkReads.KEYS, KEY_BATCH, False
        single = await _explain(grid, {"files_id": probe_id, "n": 0}, None)
        if _searches_both_columns(single):
            return ChunkReads.KEYS, 1, False
    except PyMongoError as exc:
        # One unsorted pass is correct, in bounded memory, on any store.
        log.warning("could not explain the chunk query (%s); reading files in one unsorted pass", exc)
    return ChunkReads.SCAN, 1, False


async def _explain(grid: AsyncDatabase, query: dict[str, Any], sort: dict[str, int] | None) -> dict[str, Any]:
    find: dict[str, Any] = {"find": "fs.chunks", "filter": query}
    if sort:
        find["sort"] = sort
    return await grid.command("explain", find)


def _stages(plan: Any) -> list[str]:
    """Every `stage` name in a MongoDB plan tree."""
    if isinstance(plan, dict):
        found = [plan["stage"]] if isinstance(plan.get("stage"), str) else []
        return found + [s for value in plan.values() for s in _stages(value)]
    if isinstance(plan, list):
        return [s for value in plan for s in _stages(value)]
    return []


def _sqlite_plan(explained: dict[str, Any]) -> list[str]:
    """FerretDB's SQLite plan lines (queryPlanner.Plan), or [] for another server."""
    lines = explained.get("queryPlanner", {}).get("Plan")
    return [str(line) for line in lines] if isinstance(lines, list) else []


def _streams_sorted(explained: dict[str, Any]) -> bool:
    if "sortPushdown" in explained:  # FerretDB: the backend applies the sort, or the handler sorts in memory
        plan = _sqlite_plan(explained)
        return explained["sortPushdown"] is True and not any("detail=SCAN" in line for line in plan)
    stages = _stages(explained.get("queryPlanner", {}).get("winningPlan", {}))
    return "SORT" not in stages and any("IXSCAN" in stage for stage in stages)


def _searches_both_columns(explained: dict[str, Any]) -> bool:
    plan = _sqlite_plan(explained)
    if plan:
        return not any("detail=SCAN" in line for line in plan) and any(_BOTH_COLUMNS.search(line) for line in plan)
    stages = _stages(explained.get("queryPlanner", {}).get("winningPlan", {}))
    return any("IXSCAN" in stage for stage in stages)
