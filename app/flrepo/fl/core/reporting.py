"""The collector's view of each round: the task's strategy decides, flrepo reports.

After every round the `RoundReporter` appends the round to the task's history (participants,
loss, metrics, duration, failures), updates the participants and their counts (active, succeeded,
failed), and checkpoints the aggregated weights to the repository, so a restarted collector can
resume and the best round can be published. Round numbers are the task's: after a resume from
round r, Flower's round 1 is reported as r + 1. `ReportingStrategy` wraps a legacy Flower strategy
with it (flrepo.fl.legacy.strategy); the Message-API runtime hooks the reporter into its strategy
(flrepo.fl.message.server). `ParticipantWait` bounds every wait for participants; `scalars` and
`numbers` are the one rule for which metrics are kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from flrepo.client import RepositoryError
from flrepo.fl.core.link import TaskLink
from flrepo.fl.frameworks import Weights

log = logging.getLogger(__name__)


Scalar = int | float | str | bool


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


class RoundReporter:
    """Round records, participants and checkpoints of one task, for either Flower runtime."""

    def __init__(self, link: TaskLink, round_offset: int = 0) -> None:
        self.link = link
        self.offset = round_offset
        self.last_loss: float | None = None
        self.last_metrics: dict[str, Any] = {}
        self.rounds_done = 0
        self.current_round = round_offset
        self.checkpoint_seconds: list[float] = []
        self.round_started = time.monotonic()
        self._participants: dict[str, dict[str, Any]] = {}
        self._last_state: dict[str, str] = {}  # node -> succeeded | failed, in its last round
        self._fit_count = 0
        self._fit_failures = 0
        self._unnamed_failures = 0

    def round_started_now(self) -> None:
        self.round_started = time.monotonic()

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
        each way and codec ms, flrepo.fl.core.compression.Traffic)."""
        task_round = server_round + self.offset
        self.last_loss, self.last_metrics = loss, dict(metrics)
        self.rounds_done, self.current_round = server_round, task_round
        record = {
            "round": task_round,
            "loss": loss,
            "metrics": scalars(metrics),
            "participants": self._fit_count,
            "failures": self._fit_failures,
            "duration_s": round(time.monotonic() - self.round_started, 3),
            **(traffic or {}),
        }
        if weights is not None:
            self._checkpoint(task_round, loss, metrics, weights)
        status: dict[str, Any] = {
            "current_round": task_round,
            "participants": list(self._participants.values()),
            "round": record,
            **self.counts(),
        }
        if active is not None:
            status["active"] = active
        try:
            self.link.report(**status)
        except RepositoryError as exc:  # a missed progress report must not stop the training
            log.warning("could not report round %d: %s", task_round, exc)

    def _checkpoint(self, task_round: int, loss: float | None, metrics: Mapping[str, Any], weights: Weights) -> None:
        started = time.monotonic()
        try:
            self.link.checkpoint(task_round, loss, scalars(metrics), weights)
        except RepositoryError as exc:  # training goes on; only a resume would start further back
            log.warning("could not checkpoint round %d: %s", task_round, exc)
            return
        self.checkpoint_seconds.append(time.monotonic() - started)


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
