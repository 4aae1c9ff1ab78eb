"""The legacy runtime's reporting: the task's `flwr.server.strategy` object wrapped so that every
round is reported and checkpointed (flrepo.fl.core.reporting.RoundReporter) and every wait for
participants is bounded (ParticipantWait); the strategy's decisions stay its own."""

from __future__ import annotations

import math
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

from flrepo.fl.core.compression import Compression
from flrepo.fl.core.link import TaskLink
from flrepo.fl.core.ordering import reply_key
from flrepo.fl.core.reporting import ParticipantWait, RoundReporter
from flrepo.fl.frameworks import Weights
from flrepo.fl.legacy.compressed import ServerSide
from flrepo.fl.strategy_setup import weighted_average


def _fit_key(result: tuple[ClientProxy, FitRes]) -> tuple[bytes, str]:
    res = result[1]
    return reply_key(res.parameters.tensors, {"num_examples": res.num_examples, **res.metrics})


class ReportingStrategy(Strategy):
    """Wraps the task's legacy strategy: same decisions, plus a status report and a checkpoint per
    round, and a bounded wait for the participants the strategy needs."""

    def __init__(
        self,
        inner: Strategy,
        link: TaskLink,
        fit_config: Mapping[str, Scalar],
        round_offset: int = 0,
        participants: ParticipantWait | None = None,
        compression: Compression | None = None,
    ) -> None:
        self.inner = inner
        spec = compression or Compression()
        # The task's compression between the strategy and the sites; it counts the bytes either way.
        self.traffic = ServerSide(spec)
        self.fit_config = {**fit_config, **(spec.config() if spec.active else {})}  # a site compresses as told
        self.offset = round_offset
        self.reporter = RoundReporter(link, round_offset)
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
    def last_metrics(self) -> dict[str, Any]:
        """The last round's metrics, and the run's traffic totals (for the training result)."""
        return {**self.reporter.last_metrics, **self.traffic.total.totals()}

    @property
    def checkpoint_seconds(self) -> list[float]:
        return self.reporter.checkpoint_seconds

    def latest_weights(self) -> Weights | None:
        return parameters_to_ndarrays(self.latest) if self.latest is not None else None

    def progress(self) -> dict[str, Any]:
        """What each heartbeat reports: the participants connected now. Not the round: the round's own
        report (sent in the background) sets it, and a heartbeat read just before that report went out
        and answered just after it would set the task's round back by one (which also made the service
        refuse the next round's checkpoint as ahead of the task)."""
        active = self.client_manager.num_available() if self.client_manager is not None else 0
        return {"active": active}

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
        self.traffic.start_round()
        instructions = self.inner.configure_fit(server_round, parameters, client_manager)
        for _, ins in instructions:
            ins.config = {**self.fit_config, **ins.config, "server_round": server_round + self.offset}
        self.traffic.outgoing(instructions)
        return instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        results, undecodable = self.traffic.incoming(results)
        failures = [*failures, *undecodable]
        results = sorted(results, key=_fit_key)  # arrival order must not change the sums (core.ordering)
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
        self.traffic.outgoing(instructions)
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
        traffic = self.traffic.end_round()
        self.reporter.round_done(server_round, loss, metrics, self.latest_weights(), active, traffic)
