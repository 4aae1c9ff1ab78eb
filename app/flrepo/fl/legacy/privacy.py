"""A task's differential privacy on the legacy gRPC runtime: the task's `flwr.server.strategy`
object inside Flower's legacy DP wrapper for its mode, the sites' updates averaged uniformly (the
noise is calibrated to one site's share), every released round composed into the task's ledger
(flrepo.fl.privacy_accounting); at the site, client-side clipping with Flower's own functions (a
NumPyClient has no mods). SecAgg+ has no legacy-runtime form in Flower: such a task is refused.
"""

from __future__ import annotations

import os
from typing import Any

from flwr.common import FitRes, NDArrays, Parameters, Scalar
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from flrepo.fl.privacy_accounting import Ledger, Private, adaptive_arguments, sampled_sites

CLIPPING_KEY = "flrepo-clipping"  # tells the site which clipping Flower's client-side wrapper expects
MODS_ENV = "FLREPO_PRIVACY_MODS"


class LegacySecureAggregation(ValueError):
    """SecAgg+ asked of a legacy strategy (a task created before its strategy said its runtime)."""


class _Accounted(Strategy):
    """Flower's DP wrapper, with uniform site weights and each released round in the ledger."""

    def __init__(self, wrapped: Strategy, ledger: Ledger) -> None:
        self.wrapped, self.ledger = wrapped, ledger

    def __repr__(self) -> str:
        return repr(self.wrapped)

    def __getattr__(self, name: str) -> Any:  # the rest of Strategy's calls, as the wrapper answers them
        return getattr(self.wrapped, name)

    def initialize_parameters(self, client_manager: Any) -> Parameters | None:
        return self.wrapped.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
        return self.wrapped.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        for _, res in results:
            res.num_examples = 1  # a plain mean: Flower's noise is calibrated to clipping_norm / sites
        parameters, metrics = self.wrapped.aggregate_fit(server_round, results, failures)
        if parameters is not None:
            self.ledger.released()
        return parameters, metrics

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
        return self.wrapped.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results: list[Any], failures: list[Any]) -> Any:
        return self.wrapped.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> Any:
        return self.wrapped.evaluate(server_round, parameters)


def _dp_strategy(inner: Strategy, dp: dict[str, Any], sites: int) -> Strategy:
    from flwr.server import strategy as flower

    noise = float(dp["noise_multiplier"])
    if dp["mode"] == "server-fixed":
        return flower.DifferentialPrivacyServerSideFixedClipping(inner, noise, float(dp["clipping_norm"]), sites)
    if dp["mode"] == "client-fixed":
        return flower.DifferentialPrivacyClientSideFixedClipping(inner, noise, float(dp["clipping_norm"]), sites)
    adaptive = (
        flower.DifferentialPrivacyServerSideAdaptiveClipping
        if dp["mode"] == "server-adaptive"
        else flower.DifferentialPrivacyClientSideAdaptiveClipping
    )
    return adaptive(inner, noise, sites, **adaptive_arguments(dp))


def wrap(strategy: Strategy, task: dict[str, Any], rounds_done: int) -> Private[Strategy]:
    """The task's strategy with its privacy settings applied (unchanged without any)."""
    privacy = task.get("privacy") or {}
    if privacy.get("secure_aggregation"):
        raise LegacySecureAggregation(
            f"privacy.secure_aggregation: strategy {task['strategy']['strategy_name']!r} runs on Flower's legacy "
            "gRPC runtime, and Flower's SecAgg+ exists only on the Message API"
        )
    dp = privacy.get("dp")
    if not dp:
        return Private(strategy, task)
    sites = sampled_sites(task)
    wrapped = _dp_strategy(strategy, dp, sites)
    ledger = Ledger(dp, sites)
    ledger.released(rounds_done)  # a resumed task spent these before
    shown = {"mechanism": f"dp-{dp['mode']}", "flower": type(wrapped).__name__, "num_sampled_clients": sites}
    config: dict[str, Scalar] = {CLIPPING_KEY: dp["mode"].split("-")[1]} if dp["mode"].startswith("client-") else {}
    return Private(_Accounted(wrapped, ledger), task, ledger, {"privacy": {**dp, **shown}}, config)


def clipped(sent: NDArrays, trained: NDArrays, metrics: dict[str, Scalar], config: dict[str, Scalar]) -> NDArrays:
    """A site's update clipped as Flower's client-side wrapper asked (its clipping_norm in the fit
    config), with Flower's functions; unchanged when nothing was asked. The adaptive wrapper also
    reads whether the update was clipped (its norm bit) from the metrics."""
    from flwr.supercore.differential_privacy import (
        KEY_CLIPPING_NORM,
        KEY_NORM_BIT,
        compute_adaptive_clip_model_update,
        compute_clip_model_update,
    )

    mode = str(config.get(CLIPPING_KEY, ""))
    if not mode or KEY_CLIPPING_NORM not in config:
        return trained
    allowed = os.environ.get(MODS_ENV, "clipping,secaggplus").split(",")
    if "clipping" not in allowed:
        raise RuntimeError(f"this site does not clip its updates ({MODS_ENV}): the task needs client-side DP")
    norm = float(config[KEY_CLIPPING_NORM])
    if mode == "adaptive":
        metrics[KEY_NORM_BIT] = bool(compute_adaptive_clip_model_update(trained, sent, norm))
    else:
        compute_clip_model_update(trained, sent, norm)
    return trained
