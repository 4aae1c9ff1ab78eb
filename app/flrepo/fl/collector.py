"""The training collector: a Flower server that runs one repository task and reports every round.

It reads the task, loads the signed strategy and the initial weights, applies the task's
settings, runs the rounds with `flwr.server.start_server` (which must own the main thread), and
stores the outcome as an aerOS training result with the final weights as .npz.
"""

from __future__ import annotations

import io
import logging
import math
import time
from typing import Any

import flwr
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from flrepo.client import RepositoryClient, RepositoryError
from flrepo.fl import pinning
from flrepo.fl.trainer import SoftmaxRegression
from flrepo.fl.weights import Weights, from_npz, to_npz

log = logging.getLogger(__name__)

# Flower's config values must be scalars; these training settings are sent to every client.
TRAINING_KEYS = ("epochs", "batch_size", "learning_rate")


def _weighted(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    total = sum(n for n, _ in results) or 1
    keys = {k for _, m in results for k, v in m.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {k: sum(n * float(m.get(k, 0.0)) for n, m in results) / total for k in sorted(keys)}


class ReportingStrategy(Strategy):
    """Wraps the task's strategy: same decisions, plus a status report to the repository per round."""

    def __init__(self, inner: Strategy, repo: RepositoryClient, task_id: str, fit_config: dict[str, Scalar]) -> None:
        self.inner = inner
        self.repo = repo
        self.task_id = task_id
        self.fit_config = fit_config
        self.latest: Parameters | None = None
        self.last_loss: float | None = None
        self.last_metrics: dict[str, Scalar] = {}
        self.rounds_done = 0
        self._round_started = time.monotonic()
        self._participants: dict[str, dict[str, Any]] = {}
        self._fit_count = 0
        self._fit_failures = 0

    def __repr__(self) -> str:
        return f"ReportingStrategy({self.inner!r})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._round_started = time.monotonic()
        instructions = self.inner.configure_fit(server_round, parameters, client_manager)
        for _, ins in instructions:
            ins.config = {**self.fit_config, **ins.config, "server_round": server_round}
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
                "last_round": server_round,
                "metrics": {k: v for k, v in res.metrics.items() if isinstance(v, int | float | str | bool)},
            }
        self._fit_count, self._fit_failures = len(results), len(failures)
        return parameters, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        loss, metrics = self.inner.aggregate_evaluate(server_round, results, failures)
        if not metrics and results:
            metrics = _weighted([(r.num_examples, r.metrics) for _, r in results])
        self.last_loss, self.last_metrics = loss, dict(metrics)
        self.rounds_done = server_round
        record = {
            "round": server_round,
            "loss": loss,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)},
            "participants": self._fit_count,
            "failures": self._fit_failures,
            "duration_s": round(time.monotonic() - self._round_started, 3),
        }
        try:
            self.repo.update_task_status(
                self.task_id,
                current_round=server_round,
                participants=list(self._participants.values()),
                round=record,
            )
        except RepositoryError as exc:  # a missed progress report must not stop the training
            log.warning("could not report round %d: %s", server_round, exc)
        return loss, metrics

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.inner.evaluate(server_round, parameters)


def configure(strategy: Strategy, task: dict[str, Any], initial: Weights) -> None:
    """Apply the task to a loaded strategy: participants, ratio, initial weights, overrides."""
    ratio = float(task["participants_ratio"])
    minimum = int(task["min_participants"])
    per_round = max(1, math.ceil(minimum * ratio))
    settings: dict[str, Any] = {
        "min_available_clients": minimum,
        "min_fit_clients": per_round,
        "min_evaluate_clients": per_round,
        "fraction_fit": ratio,
        "fraction_evaluate": ratio,
        "initial_parameters": ndarrays_to_parameters(initial),
        "fit_metrics_aggregation_fn": _weighted,
        "evaluate_metrics_aggregation_fn": _weighted,
    }
    for key, value in settings.items():
        if hasattr(strategy, key):
            setattr(strategy, key, value)
    if hasattr(strategy, "current_weights"):  # FedOpt family keeps its own copy
        strategy.current_weights = initial
    for key, value in (task.get("strategy_conf") or {}).items():
        if not hasattr(strategy, key):
            raise ValueError(f"strategy {type(strategy).__name__} has no parameter {key!r}")
        setattr(strategy, key, value)


def initial_weights(repo: RepositoryClient, task: dict[str, Any], allow_unsigned: bool = False) -> Weights:
    name, version = task["model"]["model_name"], task["model"]["model_version"]
    data = pinning.read_model(repo, task, allow_unsigned)  # the file the task pinned, or None
    if data is not None:
        return from_npz(data)
    # A registered model without weights starts from the built-in trainer's initialisation.
    model = repo.get_model(name, version)
    return SoftmaxRegression().initial_weights(int(model.meta.get("features", 64)), int(model.meta.get("classes", 10)))


def run(repo: RepositoryClient, task_id: str, address: str, allow_unsigned: bool = False) -> int:
    """Run the task to its end; 0 when it Succeeded, 1 when it Failed (the task says why)."""
    task = repo.get_task(task_id).model_dump()
    model = task["model"]
    name, version = model["model_name"], model["model_version"]
    result_created = False
    try:
        strategy = pinning.load_strategy(repo, task, allow_unsigned)  # the pinned version, signature checked
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy {task['strategy']['strategy_name']!r} is a {type(strategy).__name__}")
        initial = initial_weights(repo, task, allow_unsigned)
        configure(strategy, task, initial)
        fit_config: dict[str, Scalar] = {k: v for k, v in task["training"].items() if isinstance(v, int | float | str)}
        reporting = ReportingStrategy(strategy, repo, task_id, fit_config)
        repo.update_task_status(task_id, phase="Running", reason="ServerStarted", message=f"Flower server on {address}")
        flwr.server.start_server(
            server_address=address,
            config=flwr.server.ServerConfig(num_rounds=int(task["rounds"]), round_timeout=task.get("round_timeout")),
            strategy=reporting,
        )
        if reporting.latest is None or reporting.rounds_done < int(task["rounds"]):
            raise RuntimeError(
                f"training stopped after {reporting.rounds_done} of {task['rounds']} rounds without final weights"
            )
        final = parameters_to_ndarrays(reporting.latest)
        results: dict[str, Any] = {
            "rounds": int(task["rounds"]),
            "final_loss": reporting.last_loss,
            **{k: v for k, v in reporting.last_metrics.items() if isinstance(v, int | float | str | bool)},
            "strategy": task["strategy"]["strategy_name"],
            **{
                f"conf_{k}": v for k, v in (task.get("strategy_conf") or {}).items() if isinstance(v, int | float | str)
            },
            "min_participants": int(task["min_participants"]),
            "participants_ratio": float(task["participants_ratio"]),
        }
        results = {k: v for k, v in results.items() if v is not None}
        repo.create_training_result(name, version, task_id, results, task["configuration_id"])
        result_created = True
        weights = io.BytesIO(to_npz(final))
        repo.upload_weights(name, version, task_id, task["configuration_id"], weights, filename="weights.npz")
        repo.update_task_status(
            task_id,
            phase="Succeeded",
            reason="TrainingComplete",
            message=f"{task['rounds']} rounds; final loss {reporting.last_loss}",
            result={**model, "training_id": task_id},
        )
        return 0
    except Exception as exc:
        log.exception("task %s failed", task_id)
        if result_created:  # nothing half-written is presented as a result
            try:
                repo.delete_training_result(name, version, task_id)
            except RepositoryError:
                log.warning("could not remove the incomplete training result %s/%s/%s", name, version, task_id)
        try:
            repo.update_task_status(task_id, phase="Failed", reason=type(exc).__name__, message=str(exc)[:2000])
        except RepositoryError as report_error:
            log.error("could not mark task %s Failed: %s", task_id, report_error)
        return 1
