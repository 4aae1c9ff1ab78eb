"""The ServerApp's work: one repository task with the task's `flwr.serverapp.strategy` object.

The same rules as the legacy runtime: the task's explicit settings replace the strategy's own,
the wait for participants is bounded by participants_timeout (counted from when the collector
started serving), every round is reported and checkpointed (from the strategy's per-round
`evaluate_fn` hook, with the replies seen by its aggregation), a resumed task continues after its
last checkpoint, and the trained model and the aerOS training result are published at the end.
The strategy decides everything else, as Flower's `Strategy.start` runs it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flrepo.client import RepositoryClient
from flrepo.fl import pinning, strategy_setup
from flrepo.fl.core.compression import Compression
from flrepo.fl.core.lifecycle import fail
from flrepo.fl.core.link import TaskLink
from flrepo.fl.core.ordering import reply_key
from flrepo.fl.core.publishing import Written, finish
from flrepo.fl.core.reporting import ParticipantWait, RoundReporter, loss_and_metrics
from flrepo.fl.core.resume import checkpoint_weights
from flrepo.fl.message import compressed, fast_grid, privacy
from flrepo.fl.task_model import fetch_model, training_settings

log = logging.getLogger(__name__)
WEIGHT_KEY = "num-examples"


class BoundedGrid:
    """The run's Grid, except that asking for the connected nodes while fewer than the strategy
    needs are connected waits at most participants_timeout (Flower's own sampling waits forever).

    The node list is asked of the SuperLink at most every NODES_TTL_S: Flower's sampling and this
    wait ask four or five times in a row between two rounds' phases, each a request on the round's
    path."""

    NODES_TTL_S = 0.1

    def __init__(self, grid: Grid, wait: ParticipantWait, poll: float = 1.0) -> None:
        self.grid, self.wait, self.poll = grid, wait, poll
        self._nodes: tuple[float, list[int]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def _node_ids(self) -> list[int]:
        now = time.monotonic()
        if self._nodes is None or now - self._nodes[0] > self.NODES_TTL_S:
            self._nodes = (now, list(self.grid.get_node_ids()))
        return list(self._nodes[1])

    def _count(self) -> int:
        return len(self._node_ids())

    def _block(self, needed: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self._count() < needed:
            if time.monotonic() >= deadline:
                return False
            fast_grid.pause(self.grid, self.poll)  # woken by a SuperNode's arrival where it can be
            self._nodes = None  # ask again: that is what the wait was for
        return True

    def get_node_ids(self) -> Iterable[int]:
        self.wait.wait(self._count, self._block)
        return self._node_ids()


def _metrics(message: Message) -> dict[str, Any]:
    records = list(message.content.metric_records.values())
    return dict(records[0]) if records else {}


def arrival_free(replies: Iterable[Message]) -> list[Message]:
    """The replies in a fixed order (flrepo.fl.core.ordering), errors last: arrival order must not
    change the strategy's sums."""

    def key(message: Message) -> tuple[bool, bytes, str]:
        if message.has_error():
            return True, b"", ""
        records = message.content.array_records
        blobs = [array.data for name in sorted(records) for array in records[name].values()]
        metric_records = message.content.metric_records
        metrics = {f"{name}.{k}": v for name, record in metric_records.items() for k, v in record.items()}
        return False, *reply_key(blobs, metrics)

    return sorted(replies, key=key)


class Reporting:
    """Hooks on the strategy object (instance attributes shadow its methods; its decisions stay its
    own) that feed the task's RoundReporter."""

    def __init__(
        self, strategy: Strategy, reporter: RoundReporter, grid: Grid, traffic: compressed.ServerSide | None = None
    ) -> None:
        self.reporter, self.grid = reporter, grid
        # The task's compression between the strategy and the Grid; it counts the bytes either way.
        self.traffic = traffic or compressed.ServerSide(Compression())
        self.evaluated: MetricRecord | None = None
        configure_train = strategy.configure_train
        configure_evaluate = strategy.configure_evaluate
        aggregate_train = strategy.aggregate_train
        aggregate_evaluate = strategy.aggregate_evaluate

        def on_configure_train(server_round: int, *args: Any) -> Iterable[Message]:
            reporter.round_started_now()
            self.evaluated = None
            self.traffic.start_round()
            return self.traffic.outgoing(configure_train(server_round, *args))

        def on_configure_evaluate(server_round: int, *args: Any) -> Iterable[Message]:
            return self.traffic.outgoing(configure_evaluate(server_round, *args))

        def on_aggregate_train(
            server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            replies = arrival_free(self.traffic.incoming(replies))
            ok = [m for m in replies if not m.has_error()]
            reporter.trained(
                server_round,
                [(str(m.metadata.src_node_id), int(_metrics(m).get(WEIGHT_KEY, 0)), _metrics(m)) for m in ok],
                [str(m.metadata.src_node_id) for m in replies if m.has_error()],
            )
            return aggregate_train(server_round, replies)

        def on_aggregate_evaluate(server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
            self.evaluated = aggregate_evaluate(server_round, list(replies))
            return self.evaluated

        strategy.configure_train = on_configure_train  # type: ignore[method-assign,assignment]
        strategy.configure_evaluate = on_configure_evaluate  # type: ignore[method-assign,assignment]
        strategy.aggregate_train = on_aggregate_train  # type: ignore[method-assign]
        strategy.aggregate_evaluate = on_aggregate_evaluate  # type: ignore[method-assign]

    def round_end(self) -> Callable[[int, ArrayRecord], MetricRecord | None]:
        """Flower calls this after every round (and once before the first, round 0)."""

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round > 0:
                loss, metrics = loss_and_metrics(dict(self.evaluated or {}))
                active = len(list(self.grid.get_node_ids()))
                traffic = self.traffic.end_round()
                self.reporter.round_done(server_round, loss, metrics, arrays.to_numpy_ndarrays(), active, traffic)
            return None

        return evaluate_fn


def run_task(grid: Grid, run_config: dict[str, Any]) -> None:
    """Train the task named by the run's `task-id`; its status says how it went."""
    task_id = str(run_config["task-id"])
    allow_unsigned = bool(run_config.get("allow-unsigned", False))
    with RepositoryClient() as repo:  # FLREPO_URL, FLREPO_API_KEY and the signature keys, as the collector's
        task = repo.get_task(task_id).model_dump()
        link = TaskLink(repo, task_id)  # this process's reports to the task (the collector has its own)
        written = Written()
        reporter: RoundReporter | None = None
        try:
            with tempfile.TemporaryDirectory(prefix="flrepo-serverapp-") as tmp:
                strategy = pinning.load_strategy(repo, task, allow_unsigned)  # the pinned version
                if not isinstance(strategy, Strategy):
                    raise TypeError(f"strategy {task['strategy']['strategy_name']!r} is not a Message-API strategy")
                model = fetch_model(repo, task, Path(tmp), allow_unsigned, weights_only=True)
                training = training_settings(task)
                model.check(training)
                done = int(run_config.get("resume-round", 0) or 0)
                start = checkpoint_weights(repo, task_id, done) if done else None
                settings, initial = strategy_setup.configure_message(strategy, task, model, start)
                needed = int(getattr(strategy, "min_available_nodes", 1) or 1)
                private = privacy.wrap(strategy, task, done)  # the task's DP: Flower's wrapper, accounted
                strategy = private.strategy
                link.report(strategy_settings={**settings, **private.settings})
                # Counted from when the collector started serving, as on the legacy runtime.
                since = time.monotonic() - max(0.0, time.time() - float(run_config.get("serving-since") or time.time()))
                wait = ParticipantWait(needed, float(task["participants_timeout"]), since)
                nodes = BoundedGrid(fast_grid.wrap(grid), wait, poll=fast_grid.MAX_PULL_S)
                reporter = RoundReporter(private.link(link), round_offset=done)
                spec = Compression.of_task(task)
                hooks = Reporting(strategy, reporter, grid, compressed.ServerSide(spec))
                remaining = int(task["rounds"]) - done
                final = start
                if remaining > 0:
                    sites_told = spec.config() if spec.active else {}  # a site compresses as told
                    told = ConfigRecord({**training.as_config(), "round-offset": done, **sites_told})
                    config = privacy.train_config(told, private)
                    result = strategy.start(
                        grid=privacy.secure_grid(nodes, task),  # type: ignore[arg-type]
                        initial_arrays=ArrayRecord(initial),
                        num_rounds=remaining,
                        timeout=float(task.get("round_timeout") or 3600),
                        train_config=config,
                        evaluate_config=ConfigRecord(dict(config)),
                        evaluate_fn=hooks.round_end(),
                    )
                    final = result.arrays.to_numpy_ndarrays() if len(result.arrays) else None
                if final is None or reporter.rounds_done < remaining:
                    raise RuntimeError(
                        f"training stopped after {done + reporter.rounds_done} of {task['rounds']} rounds "
                        "without final weights"
                    )
                reporter.flush(final=True)  # the rounds' reports and checkpoints before the task's end
                totals = {**reporter.last_metrics, **hooks.traffic.total.totals()}  # in the training result
                figures, guarantee = reporter.figures(), private.guarantee()
                last = reporter.last_loss, totals
                finish(link, model, final, *last, Path(tmp), written, figures, guarantee, reporter.held())
        except Exception as exc:
            if reporter is not None:
                reporter.flush()
            fail(link, task, exc, written)
