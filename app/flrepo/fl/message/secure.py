"""Flower's SecAgg+ under a Message-API strategy: each training round that the strategy sends is
carried out as the four stages of Flower's `SecAggPlusWorkflow` (setup, share keys, collect masked
vectors, unmask), and the strategy receives, from every site that took part, a reply carrying the
unmasked sum (the weighted mean of their updates) and the site's own metrics, never the site's own
update. FedAvg of identical arrays is those arrays, so the strategy's aggregate is SecAgg+'s.

Flower 1.42 runs that workflow only for its legacy-strategy `DefaultWorkflow`; its stages take a
LegacyContext for the strategy's `configure_fit`/`aggregate_fit` and the round's parameters. The
`_RoundContext` below gives them those from the strategy's own training messages.
tests/fl/test_flower_internals.py checks the parts of the workflow this relies on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid

log = logging.getLogger(__name__)
WEIGHT_KEY = "num-examples"
DROPPED = 0  # the error code of a site's reply when it dropped out of a SecAgg+ round


class SecureAggregationFailed(RuntimeError):
    """Too few sites stayed in a SecAgg+ round to unmask the sum: the round (and the task) fails."""


@dataclass
class _Proxy:
    """What the workflow keeps per site (a legacy ClientProxy: only its node_id is read)."""

    node_id: int


@dataclass
class _Strategy:
    """The legacy-strategy calls the workflow makes: the round's instructions are the strategy's
    messages; the aggregate is captured."""

    messages: list[Message]
    results: list[tuple[Any, Any]] = field(default_factory=list)
    failures: list[Any] = field(default_factory=list)

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[tuple[_Proxy, Any]]:
        from flwr.common import FitIns

        return [(_Proxy(m.metadata.dst_node_id), FitIns(parameters, {})) for m in self.messages]

    def aggregate_fit(self, server_round: int, results: list[Any], failures: list[Any]) -> tuple[Any, dict[str, Any]]:
        self.results, self.failures = list(results), list(failures)
        return (results[0][1].parameters if results else None), {}


class _History:
    def add_metrics_distributed_fit(self, server_round: int, metrics: dict[str, Any]) -> None:
        """Flower's legacy history: the strategy keeps its own."""


@dataclass
class _RoundContext:
    """The parts of a LegacyContext the SecAgg+ stages read."""

    state: RecordDict
    strategy: _Strategy
    client_manager: Any
    history: _History = field(default_factory=_History)


class _Count:
    def __init__(self, count: int) -> None:
        self.count = count

    def num_available(self) -> int:
        return self.count


def workflow(settings: dict[str, Any], timeout: float | None) -> Any:
    """Flower's SecAgg+ workflow with the task's settings."""
    from flwr.server.workflow import SecAggPlusWorkflow

    return SecAggPlusWorkflow(
        num_shares=settings["num_shares"],
        reconstruction_threshold=settings["reconstruction_threshold"],
        max_weight=float(settings.get("max_weight", 1000.0)),
        clipping_range=float(settings.get("clipping_range", 8.0)),
        quantization_range=int(settings.get("quantization_range", 4194304)),
        timeout=timeout,
    )


class _Watched:
    """The Grid the stages send through, keeping why each site's reply was an error."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.errors: dict[int, str] = {}

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        # The SuperLink answers for a site that went offline (Node Unavailable) from its own node id:
        # the site is the one the message was for (pushing set each message's id).
        site_of = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        for reply in replies:
            if reply.has_error():
                site = site_of.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
                self.errors.setdefault(site, reply.error.reason or "an error")
        return replies


class SecureGrid:
    """The run's Grid; training rounds go through SecAgg+, everything else as it is."""

    def __init__(self, grid: Grid, settings: dict[str, Any], timeout: float | None) -> None:
        self.grid, self.settings, self.timeout = grid, settings, timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if not messages or messages[0].metadata.message_type != MessageType.TRAIN:
            return self.grid.send_and_receive(messages, timeout=timeout)
        return self.secure_round(messages)

    def secure_round(self, messages: list[Message]) -> list[Message]:
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
        from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

        first = messages[0].content
        config = first.config_records.get("config")
        server_round = int(str(config.get("server-round", 0))) if config is not None else 0
        state = RecordDict(
            {
                MAIN_CONFIGS_RECORD: ConfigRecord({Key.CURRENT_ROUND: server_round}),
                MAIN_PARAMS_RECORD: next(iter(first.array_records.values())),
            }
        )
        strategy = _Strategy(messages)
        context = _RoundContext(state, strategy, _Count(len(messages)))
        flow, progress, watched = workflow(self.settings, self.timeout), WorkflowState(), _Watched(self.grid)
        if not flow.setup_stage(watched, context, progress):
            raise self._failed(server_round, "setup", progress, len(messages), watched.errors)
        # A site that did not set the protocol up (it refused, or did not answer) holds no key and
        # no share of any: the round is the others'. Flower would count it as a dropout to unmask,
        # whose key shares nobody has, and halt the round.
        progress.sampled_node_ids = set(progress.active_node_ids)
        # The strategy's own instructions, one RecordDict per site (SecAgg+ adds its config to each).
        progress.nid_to_fitins = {m.metadata.dst_node_id: RecordDict(dict(m.content.items())) for m in messages}
        for stage, step in (
            ("share keys", flow.share_keys_stage),
            ("collect masked vectors", flow.collect_masked_vectors_stage),
            ("unmask", flow.unmask_stage),
        ):
            if not step(watched, context, progress):
                raise self._failed(server_round, stage, progress, len(messages), watched.errors)
        return self._replies(messages, strategy, watched.errors)

    def _failed(
        self, server_round: int, stage: str, progress: Any, sampled: int, errors: dict[int, str]
    ) -> SecureAggregationFailed:
        why = "; ".join(f"node {node}: {reason}" for node, reason in errors.items())
        return SecureAggregationFailed(
            f"round {server_round}: SecAgg+ stopped at its {stage} stage: {len(progress.active_node_ids)} of "
            f"{sampled} sites still in, fewer than the reconstruction threshold ({progress.threshold}) needs "
            f"among each site's neighbours" + (f" ({why})" if why else "")
        )

    def _replies(self, messages: list[Message], strategy: _Strategy, errors: dict[int, str]) -> list[Message]:
        from flwr.common import parameters_to_ndarrays

        from flrepo.fl.core.reporting import numbers

        by_node = {m.metadata.dst_node_id: m for m in messages}
        replies: list[Message] = []
        for proxy, fitres in strategy.results:
            aggregate = ArrayRecord(parameters_to_ndarrays(fitres.parameters))
            metrics = MetricRecord({**numbers(dict(fitres.metrics)), WEIGHT_KEY: int(fitres.num_examples)})
            content = RecordDict({"arrays": aggregate, "metrics": metrics})
            replies.append(Message(content, reply_to=by_node[proxy.node_id]))
        answered = {proxy.node_id for proxy, _ in strategy.results}
        for node, message in by_node.items():
            if node not in answered:
                reason = f"dropped out of the SecAgg+ round: {errors.get(node, 'no answer')}"
                log.warning("SecAgg+: node %s %s", node, reason)
                replies.append(Message(Error(DROPPED, reason), reply_to=message))
        log.info("SecAgg+: %d of %d sites in the sum", len(answered), len(messages))
        return replies
