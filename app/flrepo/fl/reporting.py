"""The collector's view of each round: the task's strategy decides, flrepo reports.

After every round the `RoundReporter` appends the round to the task's history (participants,
loss, metrics, duration, failures), updates the participants and their counts (active, succeeded,
failed), and checkpoints the aggregated weights to the repository, so a restarted collector can
resume and the best round can be published. Round numbers are the task's: after a resume from
round r, Flower's round 1 is reported as r + 1. `ReportingStrategy` wraps a legacy Flower strategy
with it (and bounds the wait for participants); the Message-API runtime uses the reporter directly.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from flrepo.client import RepositoryClient, RepositoryError
from flrepo.fl.frameworks import Weights
from flrepo.fl.publishing import NotEnoughParticipants
from flrepo.fl.strategy_setup import weighted_average
from flrepo.fl.weights import to_npz

log = logging.getLogger(__name__)


def _scalars(metrics: dict[str, Any]) -> dict[str, int | float | str | bool]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}


class RoundReporter:
    """Round records, participants and checkpoints of one task, for either Flower runtime."""

    def __init__(self, repo: RepositoryClient, task_id: str, round_offset: int = 0) -> None:
        self.repo = repo
        self.task_id = task_id
        self.offset = round_offset
        self.last_loss: float | None = None
        self.last_metrics: dict[str, Scalar] = {}
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
                "metrics": _scalars(metrics),
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
        metrics: dict[str, Scalar],
        weights: Weights | None,
        active: int | None = None,
    ) -> None:
        """Checkpoint `weights` and append the round to the task's history."""
        task_round = server_round + self.offset
        self.last_loss, self.last_metrics = loss, metrics
        self.rounds_done, self.current_round = server_round, task_round
        record = {
            "round": task_round,
            "loss": loss,
            "metrics": _scalars(metrics),
            "participants": self._fit_count,
            "failures": self._fit_failures,
            "duration_s": round(time.monotonic() - self.round_started, 3),
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
            self.repo.update_task_status(self.task_id, **status)
        except RepositoryError as exc:  # a missed progress report must not stop the training
            log.warning("could not report round %d: %s", task_round, exc)

    def _checkpoint(self, task_round: int, loss: float | None, metrics: dict[str, Scalar], weights: Weights) -> None:
        started = time.monotonic()
        try:
            self.repo.create_checkpoint(self.task_id, task_round, loss=loss, metrics=_scalars(metrics))
            data = to_npz(weights)
            self.repo.upload_checkpoint(self.task_id, task_round, io.BytesIO(data), filename=f"round-{task_round}.npz")
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


class ReportingStrategy(Strategy):
    """Wraps the task's legacy strategy: same decisions, plus a status report and a checkpoint per
    round, and a bounded wait for the participants the strategy needs."""

    def __init__(
        self,
        inner: Strategy,
        repo: RepositoryClient,
        task_id: str,
        fit_config: Mapping[str, Scalar],
        round_offset: int = 0,
        participants: ParticipantWait | None = None,
    ) -> None:
        self.inner = inner
        self.fit_config = dict(fit_config)
        self.offset = round_offset
        self.reporter = RoundReporter(repo, task_id, round_offset)
        self.participants = participants
        self.latest: Parameters | None = None
        self.client_manager: ClientManager | None = None

    def __repr__(self) -> str:
        return f"ReportingStrategy({self.inner!r})"

    # What the collector reads after the run.
    @property
    def rounds_done(self) -> int:
        return self.reporter.rounds_done

    @property
    def last_loss(self) -> float | None:
        return self.reporter.last_loss

    @property
    def last_metrics(self) -> dict[str, Scalar]:
        return self.reporter.last_metrics

    @property
    def checkpoint_seconds(self) -> list[float]:
        return self.reporter.checkpoint_seconds

    def latest_weights(self) -> Weights | None:
        return parameters_to_ndarrays(self.latest) if self.latest is not None else None

    def progress(self) -> dict[str, Any]:
        """What each heartbeat reports: the round and the participants connected now."""
        active = self.client_manager.num_available() if self.client_manager is not None else 0
        return {"current_round": self.reporter.current_round, "active": active}

    def _wait(self, client_manager: ClientManager) -> None:
        self.client_manager = client_manager
        if self.participants is not None:
            self.participants.wait(
                client_manager.num_available,
                lambda n, seconds: client_manager.wait_for(n, timeout=max(1, math.ceil(seconds))),
            )

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        self.client_manager = client_manager
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._wait(client_manager)
        self.reporter.round_started_now()
        instructions = self.inner.configure_fit(server_round, parameters, client_manager)
        for _, ins in instructions:
            ins.config = {**self.fit_config, **ins.config, "server_round": server_round + self.offset}
        return instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        parameters, metrics = self.inner.aggregate_fit(server_round, results, failures)
        if parameters is not None:
            self.latest = parameters
        named = [str(f[0].cid) for f in failures if isinstance(f, tuple)]
        self.reporter.trained(
            server_round,
            [(str(proxy.cid), res.num_examples, dict(res.metrics)) for proxy, res in results],
            named,
            unnamed=len(failures) - len(named),
        )
        return parameters, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        self._wait(client_manager)
        instructions = self.inner.configure_evaluate(server_round, parameters, client_manager)
        if not instructions:  # no evaluation this round: it ends here
            self._round_done(server_round, None, {})
        return instructions

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        loss, metrics = self.inner.aggregate_evaluate(server_round, results, failures)
        if not metrics and results:
            metrics = weighted_average([(r.num_examples, r.metrics) for _, r in results])
        self._round_done(server_round, loss, dict(metrics))
        return loss, metrics

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.inner.evaluate(server_round, parameters)

    def _round_done(self, server_round: int, loss: float | None, metrics: dict[str, Scalar]) -> None:
        active = self.client_manager.num_available() if self.client_manager is not None else None
        self.reporter.round_done(server_round, loss, metrics, self.latest_weights(), active)
