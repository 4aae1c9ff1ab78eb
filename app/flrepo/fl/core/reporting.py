"""The collector's view of each round: the task's strategy decides, flrepo reports.

After every round the `RoundReporter` appends the round to the task's history (participants,
loss, metrics, duration, failures), updates the participants and their counts (active, succeeded,
failed), and checkpoints the aggregated weights to the repository, so a restarted collector can
resume and the best round can be published. Those writes leave the round's critical path: a
`Sender` thread makes them in order while the next round trains, at most `BACKLOG` writes behind
(then the round waits, and its duration shows it), rounds that end meanwhile written together and
no more often than keeps them within a share of the training's time (flrepo.fl.core.round_writes);
the collector flushes it before it reports the task's end. Round numbers are the task's: after a resume from
round r, Flower's round 1 is reported as r + 1. `ReportingStrategy` wraps a legacy Flower strategy
with it (flrepo.fl.legacy.strategy); the Message-API runtime hooks the reporter into its strategy
(flrepo.fl.message.server). `ParticipantWait` bounds every wait for participants; `scalars` and
`numbers` are the one rule for which metrics are kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from flrepo.client import RepositoryError
from flrepo.fl.core.link import TaskLink
from flrepo.fl.core.round_writes import RoundWrites, Staged
from flrepo.fl.frameworks import Weights

log = logging.getLogger(__name__)


Scalar = int | float | str | bool
# Rounds whose writes may wait to be sent: one being sent and one behind it. A deeper backlog would
# only hold more weights in memory; a round that finds it full waits for the repository.
BACKLOG = 2
# How long a collector waits for its last rounds' writes before it reports the task's end.
FLUSH_SECONDS = 600.0


class NotEnoughParticipants(RuntimeError):
    """Fewer participants than the task needs joined within its participants_timeout (the class
    name is the task's failure reason)."""


def scalars(metrics: Mapping[str, Any]) -> dict[str, Scalar]:
    """The metrics a task's status and checkpoints keep: numbers, strings and flags."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}


def numbers(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """The numeric metrics (what Flower's Message-API records carry and its strategies average)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def loss_and_metrics(metrics: Mapping[str, Any] | None) -> tuple[float | None, dict[str, float | int]]:
    """An evaluation's `loss` apart from its other numeric metrics."""
    values = numbers(metrics or {})
    loss = values.pop("loss", None)
    return (float(loss) if loss is not None else None), values


class Sender:
    """One thread that runs a collector's writes in the order they were given, off the caller's
    critical path. `send` returns at once unless `backlog` writes are already waiting (then it waits
    for the oldest to finish); `flush` waits until all were made. A write that raises is logged and
    the next one goes on, as when the collector made them inline."""

    def __init__(self, backlog: int = BACKLOG, name: str = "flrepo-sender") -> None:
        self.backlog, self.name = max(1, backlog), name
        self.waited_seconds = 0.0  # how long callers waited for the backlog to drain
        self._jobs: deque[Callable[[], None]] = deque()  # the first one is being run
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None

    def send(self, job: Callable[[], None]) -> None:
        started = time.monotonic()
        with self._lock:
            while len(self._jobs) >= self.backlog:
                self._lock.wait()
            self._jobs.append(job)
            if self._thread is None:  # daemon: an abandoned sender never keeps the process alive
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._lock.notify_all()
        self.waited_seconds += time.monotonic() - started

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until every write given so far was made (at most `timeout` s); whether they were."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._jobs:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("%d writes to the repository still waiting after %g s", len(self._jobs), timeout)
                    return False
                self._lock.wait(left)
        return True

    def discard(self) -> None:
        """Drop the writes not yet started (the task ended without this collector: they would be refused)."""
        with self._lock:
            while len(self._jobs) > 1:
                self._jobs.pop()
            self._lock.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._jobs:
                    self._lock.wait()
                job = self._jobs[0]
            try:
                job()
            except Exception:  # a write's own errors are its own; the thread must outlive them
                log.exception("a write to the repository failed")
            with self._lock:
                self._jobs.popleft()
                self._lock.notify_all()


class RoundReporter:
    """Round records, participants and checkpoints of one task, for either Flower runtime.

    A round's duration runs from the end of the previous round's hook (the first round: from
    `round_started_now`, when it is configured) to its aggregation, so that every second between
    the first round's start and the last round's end, including a wait for the repository, falls
    in exactly one round."""

    def __init__(self, link: TaskLink, round_offset: int = 0, sender: Sender | None = None) -> None:
        self.link = link
        self.offset = round_offset
        self.sender = sender or Sender()
        # A round write: a status report, a checkpoint's registration and its upload (see first_cost).
        self.writes = RoundWrites(
            self.sender, self._checkpoint, self._report, first_cost=lambda: 3 * link.timing.report_s
        )
        self.last_loss: float | None = None
        self.last_metrics: dict[str, Any] = {}
        self.rounds_done = 0
        self.current_round = round_offset  # the last round reported to the task
        self.checkpoint_seconds: list[float] = []
        self.rounds_seconds = 0.0  # the rounds' durations, added up
        self.round_started = time.monotonic()
        self._chained = False  # the round's start is the previous round's end
        self._participants: dict[str, dict[str, Any]] = {}
        self._last_state: dict[str, str] = {}  # node -> succeeded | failed, in its last round
        self._fit_count = 0
        self._fit_failures = 0
        self._unnamed_failures = 0

    def round_started_now(self) -> None:
        """A round is configured: its start, unless a previous round's end already is."""
        if not self._chained:
            self.round_started = time.monotonic()

    def flush(self, timeout: float = FLUSH_SECONDS, final: bool = False) -> bool:
        """Wait for the rounds' reports and checkpoints (before the task's end is reported); `final`: the
        newest round's report is kept for the task's end report to carry (`held`)."""
        self.writes.flush(final)
        return self.sender.flush(timeout)

    def held(self) -> dict[str, Any]:
        """The newest round's report a final flush kept (flrepo.fl.core.round_writes): the task's end
        report carries it; {} when it was sent already. A `flush()` after a failed end sends it."""
        return dict(self.writes.held or {})

    def figures(self) -> dict[str, float]:
        """What the rounds cost, for the training result: their time, how much of it they waited for
        the repository (a full backlog of writes), and the round writes made in the background (how
        many, and their time: the repository's share of the rounds as the collector saw it)."""
        return {
            "rounds_s": round(self.rounds_seconds, 3),
            "repository_wait_s": round(self.sender.waited_seconds, 3),
            "round_writes": self.writes.writes,
            "round_writes_s": round(self.writes.seconds, 3),
        }

    def abandon(self) -> None:
        """The task ended without this collector: the writes not yet made are dropped."""
        self.writes.drop()
        self.sender.discard()

    def trained(
        self, server_round: int, results: list[tuple[str, int, dict[str, Any]]], failed: list[str], unnamed: int = 0
    ) -> None:
        """The training part of a round: (node, samples, metrics) per result; the nodes that failed,
        and failures that name no node (a lost connection)."""
        task_round = server_round + self.offset
        for node, samples, metrics in results:
            self._participants[node] = {
                "node_id": node,
                "samples": int(samples),
                "last_round": task_round,
                "metrics": scalars(metrics),
            }
            self._last_state[node] = "succeeded"
        for node in failed:
            self._last_state[node] = "failed"
        self._fit_count, self._fit_failures, self._unnamed_failures = len(results), len(failed) + unnamed, unnamed

    def counts(self) -> dict[str, int]:
        """Participants whose last round succeeded or failed."""
        states = list(self._last_state.values())
        return {"succeeded": states.count("succeeded"), "failed": states.count("failed") + self._unnamed_failures}

    def round_done(
        self,
        server_round: int,
        loss: float | None,
        metrics: Mapping[str, Any],
        weights: Weights | None,
        active: int | None = None,
        traffic: Mapping[str, Any] | None = None,
    ) -> None:
        """Checkpoint `weights` and append the round to the task's history (with its `traffic`: bytes
        each way and codec ms, flrepo.fl.core.compression.Traffic), in the background."""
        task_round = server_round + self.offset
        self.last_loss, self.last_metrics = loss, dict(metrics)
        self.rounds_done = server_round
        kept = scalars(metrics)  # a copy: the caller's metrics may change before it is sent
        duration = round(time.monotonic() - self.round_started, 3)
        self.rounds_seconds += duration
        record: dict[str, Any] = {
            "round": task_round,
            "loss": loss,
            "metrics": kept,
            "participants": self._fit_count,
            "failures": self._fit_failures,
            "duration_s": duration,
            **(traffic or {}),
        }
        record = self.link.round_record(record)  # now: ε, say, is the one spent up to this round
        status: dict[str, Any] = {
            "current_round": task_round,
            "participants": list(self._participants.values()),
            **self.counts(),
        }
        if active is not None:
            status["active"] = active
        # Written in the background, with the rounds that end before it is due (flrepo.fl.core.round_writes).
        self.writes.add(status, record, Staged(task_round, loss, kept, weights) if weights is not None else None)
        self.round_started, self._chained = time.monotonic(), True

    def _report(self, fields: dict[str, Any]) -> None:
        rounds = [r["round"] for r in [*fields.get("round_records", []), fields["round"]]]
        try:
            self.link.report(**fields)
        except RepositoryError as exc:  # a missed progress report must not stop the training
            named = f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {rounds[0]}-{rounds[-1]}"
            log.warning("could not report %s: %s", named, exc)
        self.current_round = int(fields["current_round"])

    def _checkpoint(self, staged: Staged) -> bool:
        started = time.monotonic()
        try:
            self.link.checkpoint(staged.round, staged.loss, scalars(staged.metrics), staged.weights)
        except RepositoryError as exc:  # training goes on; only a resume would start further back
            log.warning("could not checkpoint round %d: %s", staged.round, exc)
            return False
        self.checkpoint_seconds.append(time.monotonic() - started)
        return True


class ParticipantWait:
    """Bounds every wait for participants: at most `timeout` seconds, counted for the first round
    from when the collector started serving (`since`)."""

    def __init__(self, needed: int, timeout: float, since: float | None = None) -> None:
        self.needed, self.timeout = needed, timeout
        self.since = time.monotonic() if since is None else since
        self.first = True

    def remaining(self) -> float:
        if self.first:
            return max(0.0, self.timeout - (time.monotonic() - self.since))
        return self.timeout

    def wait(self, available: Callable[[], int], block: Callable[[int, float], bool]) -> None:
        """`block(needed, seconds)` waits and says whether enough joined; NotEnoughParticipants if not."""
        seconds = self.remaining()
        if available() < self.needed and not block(self.needed, seconds):
            raise NotEnoughParticipants(
                f"{available()} of {self.needed} participant{'s' if self.needed != 1 else ''} joined within "
                f"{self.timeout:g} s (participants_timeout)"
            )
        self.first = False
