"""The collector's view of each round: the task's strategy decides, this wrapper reports.

After every round it appends the round to the task's history (participants, loss, metrics,
duration) and checkpoints the aggregated weights to the repository, so a restarted collector can
resume and the best round can be published. Round numbers are the task's: after a resume from
round r, Flower's round 1 is reported as r + 1.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping
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
from flrepo.fl.strategy_setup import weighted_average
from flrepo.fl.weights import to_npz

log = logging.getLogger(__name__)


def _scalars(metrics: dict[str, Any]) -> dict[str, int | float | str | bool]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}


class ReportingStrategy(Strategy):
    """Wraps the task's strategy: same decisions, plus a status report and a checkpoint per round."""

    def __init__(
        self,
        inner: Strategy,
        repo: RepositoryClient,
        task_id: str,
        fit_config: Mapping[str, Scalar],
        round_offset: int = 0,
    ) -> None:
        self.inner = inner
        self.repo = repo
        self.task_id = task_id
        self.fit_config = dict(fit_config)
        self.offset = round_offset
        self.latest: Parameters | None = None
        self.last_loss: float | None = None
        self.last_metrics: dict[str, Scalar] = {}
        self.rounds_done = 0
        self.checkpoint_seconds: list[float] = []
        self._round_started = time.monotonic()
        self._participants: dict[str, dict[str, Any]] = {}
        self._fit_count = 0
        self._fit_failures = 0

    def __repr__(self) -> str:
        return f"ReportingStrategy({self.inner!r})"

    def latest_weights(self) -> Weights | None:
        return parameters_to_ndarrays(self.latest) if self.latest is not None else None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._round_started = time.monotonic()
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
        for proxy, res in results:
            node = str(proxy.cid)
            self._participants[node] = {
                "node_id": node,
                "samples": int(res.num_examples),
                "last_round": server_round + self.offset,
                "metrics": _scalars(res.metrics),
            }
        self._fit_count, self._fit_failures = len(results), len(failures)
        return parameters, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
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
        task_round = server_round + self.offset
        self.last_loss, self.last_metrics = loss, metrics
        self.rounds_done = server_round
        record = {
            "round": task_round,
            "loss": loss,
            "metrics": _scalars(metrics),
            "participants": self._fit_count,
            "failures": self._fit_failures,
            "duration_s": round(time.monotonic() - self._round_started, 3),
        }
        self._checkpoint(task_round, loss, metrics)
        try:
            self.repo.update_task_status(
                self.task_id,
                current_round=task_round,
                participants=list(self._participants.values()),
                round=record,
            )
        except RepositoryError as exc:  # a missed progress report must not stop the training
            log.warning("could not report round %d: %s", task_round, exc)

    def _checkpoint(self, task_round: int, loss: float | None, metrics: dict[str, Scalar]) -> None:
        if self.latest is None:
            return
        started = time.monotonic()
        try:
            self.repo.create_checkpoint(self.task_id, task_round, loss=loss, metrics=_scalars(metrics))
            data = to_npz(parameters_to_ndarrays(self.latest))
            self.repo.upload_checkpoint(self.task_id, task_round, io.BytesIO(data), filename=f"round-{task_round}.npz")
        except RepositoryError as exc:  # training goes on; only a resume would start further back
            log.warning("could not checkpoint round %d: %s", task_round, exc)
            return
        self.checkpoint_seconds.append(time.monotonic() - started)
