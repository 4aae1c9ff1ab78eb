"""A task's differential privacy on the Message-API runtime: the task's strategy inside Flower's DP
wrapper for its mode (flwr.serverapp.strategy), the sites' updates averaged uniformly (the noise
is calibrated to one site's share), and every released round composed into the task's ledger
(flrepo.fl.privacy_accounting). Flower's classes do the clipping and the noise; this module picks
them, feeds them the task's settings, and says what they did.

With SecAgg+ too (client-side modes only: flrepo.schemas.privacy), each site clips its own update
before masking it (flrepo.fl.message.site_privacy), the SecAgg+ Grid hands the wrapper the
unmasked mean of the clipped updates in every reply, and the wrapper adds its noise to that: the
collector never sees a single site's update, and the released model carries the accounted ε. A
site that drops out of such a round fails it (Flower's DP wrappers release only a round with
every sampled site: the noise is calibrated to their count).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp.strategy import Strategy

from flrepo.fl.message.secure import SecureGrid
from flrepo.fl.privacy_accounting import (
    SECAGG,
    Ledger,
    Private,
    adaptive_arguments,
    mechanisms,
    sampled_sites,
    secure_settings,
)

log = logging.getLogger(__name__)
WEIGHT_KEY = "num-examples"
CLIPPING_KEY = "flrepo-clipping"  # tells a site's ClientApp which of Flower's clipping mods to run


class PrivacyRefused(RuntimeError):
    """Sites refused a round the task's privacy needs (no clipping mod, say): the task fails with why."""


def _dp_strategy(inner: Strategy, dp: dict[str, Any], sites: int) -> Strategy:
    from flwr.serverapp import strategy as flower

    noise = float(dp["noise_multiplier"])
    if dp["mode"].endswith("-fixed"):
        fixed = {
            "server-fixed": flower.DifferentialPrivacyServerSideFixedClipping,
            "client-fixed": flower.DifferentialPrivacyClientSideFixedClipping,
        }[dp["mode"]]
        return fixed(inner, noise, float(dp["clipping_norm"]), sites)
    adaptive = {
        "server-adaptive": flower.DifferentialPrivacyServerSideAdaptiveClipping,
        "client-adaptive": flower.DifferentialPrivacyClientSideAdaptiveClipping,
    }[dp["mode"]]
    return adaptive(inner, noise, sites, **adaptive_arguments(dp))


def _uniform(replies: list[Message]) -> None:
    """Every site's weight 1: Flower's noise is calibrated to clipping_norm / sites, one site's share
    of a plain mean; a sample-weighted mean would give a large site more than that."""
    for reply in replies:
        if reply.has_error():
            continue
        for record in reply.content.metric_records.values():
            if WEIGHT_KEY in record:
                record[WEIGHT_KEY] = 1


def _refusals(replies: list[Message]) -> list[str]:
    return [f"node {m.metadata.src_node_id}: {m.error.reason}" for m in replies if m.has_error()]


def _accounted(strategy: Strategy, ledger: Ledger) -> None:
    """The wrapper's aggregation composes each released round (one with an aggregate) into the ledger."""
    aggregate_train = strategy.aggregate_train

    def on_aggregate_train(
        server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        _uniform(replies)
        arrays, metrics = aggregate_train(server_round, replies)
        if arrays is None:
            refused = _refusals(replies)
            if refused:  # Flower's DP wrappers aggregate nothing when any site failed: say why
                raise PrivacyRefused(f"round {server_round}: {'; '.join(refused)}")
        else:
            ledger.released()
        return arrays, metrics

    strategy.aggregate_train = on_aggregate_train  # type: ignore[method-assign]


def wrap(strategy: Strategy, task: dict[str, Any], rounds_done: int) -> Private[Strategy]:
    """The task's strategy with its privacy settings applied (unchanged without any). SecAgg+ is
    the Grid's (`secure_grid`); with DP too, Flower's client-side DP wrapper runs on the sum it gives."""
    privacy = task.get("privacy") or {}
    dp, secure = privacy.get("dp"), privacy.get("secure_aggregation")
    if not dp:
        if secure:
            return Private(strategy, task, settings={"privacy": {**secure, "mechanism": SECAGG}})
        return Private(strategy, task)
    sites = sampled_sites(task)
    wrapped = _dp_strategy(strategy, dp, sites)
    ledger = Ledger(dp, sites)
    ledger.released(rounds_done)  # a resumed task spent these before
    _accounted(wrapped, ledger)
    shown: dict[str, Any] = {
        "mechanism": "+".join(mechanisms(privacy)),
        "flower": type(wrapped).__name__,
        "num_sampled_clients": sites,
    }
    if secure:
        shown["secure_aggregation"] = secure_settings(task)
    config = {CLIPPING_KEY: dp["mode"].split("-")[1]} if dp["mode"].startswith("client-") else {}
    return Private(wrapped, task, ledger, {"privacy": {**dp, **shown}}, config)


def train_config(config: ConfigRecord, private: Private) -> ConfigRecord:
    """The round config with what the sites' privacy mods need."""
    return ConfigRecord({**dict(config), **private.config}) if private.config else config


def secure_grid(grid: Any, task: dict[str, Any]) -> Any:
    """The Grid the strategy runs on: with SecAgg+ for its training rounds when the task asks for it."""
    secure = secure_settings(task)
    if not secure:
        return grid
    return SecureGrid(grid, secure, float(task.get("round_timeout") or 3600))
