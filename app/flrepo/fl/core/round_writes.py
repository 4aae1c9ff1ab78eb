"""A collector's round writes, paced so that they take at most a share of the training's time.

Every round ends with a status report (the round's record in the history, the participants) and a
checkpoint (register, then upload, the aggregated weights). When rounds last seconds that is a few
per cent of each. When they last a tenth of a second (a small model on quick sites), one report
and one checkpoint per round kept the repository busy for most of every round: 30 legacy sites,
0.11-s rounds, 31-71 ms of server time each (bench/RESULTS.md, #20).

`RoundWrites` holds the rounds that end while a write is being made or is not due yet, and writes
them together: one report carrying every held round's record but the newest (`round_records`, then
`round`), the newest checkpoint, the lowest-loss one among the held rounds when it beats every loss
written (so `publish: best` still finds the best round), then the newest round's report. (The
service takes a checkpoint at most one round past the task's reported progress, and the newest
round the task shows has its checkpoint written first.) After a write that took w seconds the next one
starts no sooner than w * (1 - share) / share later, at most MAX_PAUSE_S: with the default share
(FLREPO_ROUND_WRITE_SHARE, 0.02) the writes take at most 2 % of the time, which leaves the task's
own reports (its start, the participants joining, its end) room within 5 % of even a training of a
few seconds (30 legacy sites, 30 rounds of 0.08 s: bench/RESULTS.md). Rounds that last longer
than that pause are written one by one, as before; `flush` writes what is held at once. A resume
starts from the newest checkpoint written, at most one pause back.

At the task's end (`flush(final=True)`) the last write's newest-round report is not sent but kept in
`held`, for the task's end report to carry (flrepo.fl.core.publishing.finish): one status report fewer
per task, after the round's checkpoint as before. A `flush()` after it (the end was not reported: the
publishing failed) sends it on its own.

The first round's write waits a pause too (at most MAX_FIRST_PAUSE_S), as though a write had just
ended, its cost estimated by `first_cost` (a round write is three requests: a status report, a
checkpoint's registration and its upload, each about as long as the task's last status report):
without it, a training of quick rounds wrote round 1 at once and its next write one pause later,
twice the share over its first pause. The task's history (and its page in the console) shows a
round at most one pause after it ended.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flrepo.fl.frameworks import Weights

log = logging.getLogger(__name__)

SHARE_ENV = "FLREPO_ROUND_WRITE_SHARE"
DEFAULT_SHARE = 0.02
# The longest pause between two writes, whatever the last one took: the task's history and its
# checkpoints stay this fresh (a write slowed by a stalled store would otherwise hold back the next for minutes).
MAX_PAUSE_S = 10.0
# The longest wait for the first round's write: the task's page shows the training under way at once.
MAX_FIRST_PAUSE_S = 2.0


def write_share() -> float:
    """The share of the training's time the round writes may take (0 < share <= 1; 1: no pause)."""
    raw = os.environ.get(SHARE_ENV, "").strip()
    if not raw:
        return DEFAULT_SHARE
    try:
        share = float(raw)
    except ValueError:
        share = math.nan
    if not 0 < share <= 1:
        log.warning("%s=%r is not a share in (0, 1]; using %g", SHARE_ENV, raw, DEFAULT_SHARE)
        return DEFAULT_SHARE
    return share


class Sender(Protocol):
    """What makes the writes in order, off the rounds' path (flrepo.fl.core.reporting.Sender)."""

    def send(self, job: Callable[[], None]) -> None: ...


@dataclass(frozen=True)
class Staged:
    """A round's checkpoint, held until its write."""

    round: int
    loss: float | None
    metrics: Mapping[str, Any]
    weights: Weights


class RoundWrites:
    """See the module docstring. `checkpoint(staged)` (whether it was written) and `report(fields)`
    make the writes, in the sender's thread; `add` is called as each round ends."""

    def __init__(
        self,
        sender: Sender,
        checkpoint: Callable[[Staged], bool],
        report: Callable[[dict[str, Any]], None],
        share: float | None = None,
        first_cost: Callable[[], float] | None = None,
    ) -> None:
        self.sender, self.checkpoint, self.report = sender, checkpoint, report
        self.share = write_share() if share is None else share
        self.first_cost = first_cost or (lambda: 0.0)
        self.writes = 0
        self.seconds = 0.0  # the writes' time, added up (the training result's round_writes_s)
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._status: dict[str, Any] = {}
        self._newest: Staged | None = None
        self._best: Staged | None = None  # a held round other than the newest, with a lower loss
        self._best_written = math.inf
        self._queued = False  # a write is waiting in the sender: it takes whatever is held when it runs
        self._due: float | None = None  # when the next write may start (time.monotonic); None: no round yet
        self._hurry = threading.Event()
        self._dropped = False
        self._final = False  # flush(final=True): the last write keeps its last report in `held`
        self.held: dict[str, Any] | None = None

    def add(self, status: Mapping[str, Any], record: dict[str, Any], staged: Staged | None) -> None:
        """A round ended: its record, the task's status after it, its checkpoint (if any)."""
        with self._lock:
            if self._due is None:
                self._due = time.monotonic() + min(MAX_FIRST_PAUSE_S, self._pause(self.first_cost()))
            self._records.append(record)
            self._status = dict(status)
            if staged is not None:
                self._stage(staged)
            if self._queued:
                return
            self._queued = True
        self.sender.send(self._write)

    def _stage(self, staged: Staged) -> None:
        held = [s for s in (self._best, self._newest) if s is not None and s.loss is not None]
        lowest = min(held, key=lambda s: float(s.loss or 0.0), default=None)
        beats_newest = lowest is not None and (staged.loss is None or float(lowest.loss or 0.0) < staged.loss)
        keep = beats_newest and lowest is not None and float(lowest.loss or 0.0) < self._best_written
        self._best = lowest if keep else None
        self._newest = staged

    def flush(self, final: bool = False) -> None:
        """Write what is held without the pause (the task is ending); `final`: the last write keeps its
        newest round's report in `held` for the task's end report (see the module docstring)."""
        self._final = final
        if not final and self.held is not None:
            fields, self.held = self.held, None
            self.sender.send(lambda: self.report(fields))
        self._hurry.set()

    def drop(self) -> None:
        """The task ended without this collector: nothing held is written."""
        self._dropped = True
        self._hurry.set()

    @staticmethod
    def _fields(records: list[dict[str, Any]], status: Mapping[str, Any]) -> dict[str, Any]:
        """One status report carrying `records` (oldest first) and `status`."""
        earlier = {"round_records": records[:-1]} if len(records) > 1 else {}
        return {**status, **earlier, "round": records[-1]}

    def _pause(self, took: float) -> float:
        """The pause after a write that took `took` s: the writes' time a `share` of the whole."""
        return min(MAX_PAUSE_S, max(0.0, took) * (1 - self.share) / self.share)

    def _write(self) -> None:
        pause = (self._due or 0.0) - time.monotonic()
        if pause > 0:
            self._hurry.wait(pause)
        with self._lock:
            records, status, staged = self._records, self._status, [self._best, self._newest]
            self._records, self._status, self._newest, self._best = [], {}, None, None
            self._queued = False
        if self._dropped or not records:
            return
        started = time.monotonic()
        checkpoints = sorted((s for s in staged if s is not None), key=lambda s: s.round)
        if checkpoints and checkpoints[-1].round > records[0]["round"]:
            # The service takes a checkpoint at most one round past the task's reported progress
            # (flrepo.server.repository.checkpoints): the earlier held rounds are reported first.
            self.report(self._fields(records[:-1], {**status, "current_round": records[-2]["round"]}))
            records = records[-1:]
        # Then the checkpoints, then the newest round: a round the task shows can be resumed from.
        for checkpoint in checkpoints:
            if self.checkpoint(checkpoint) and checkpoint.loss is not None:
                self._best_written = min(self._best_written, checkpoint.loss)
        with self._lock:
            last = self._final and not self._records  # no round is held for a write after this one
        if last:
            self.held = self._fields(records, status)
        else:
            self.report(self._fields(records, status))
        self.writes += 1
        took = time.monotonic() - started
        self.seconds += took
        self._due = time.monotonic() + self._pause(took)
