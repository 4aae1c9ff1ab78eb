"""The collector on Flower's legacy gRPC runtime: Flower's server in this process (its main thread,
where a cancel interrupts it) trains the task with its `flwr.server.strategy` object."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.server import Server, run_fl
from flwr.server.strategy import Strategy
from flwr.server.superlink.fleet.grpc_bidi.grpc_server import start_grpc_server

from flrepo.fl import strategy_setup
from flrepo.fl.core.compression import Compression
from flrepo.fl.core.lifecycle import RUNNING_PROGRESS, fail, started, stopped
from flrepo.fl.core.link import TaskLink
from flrepo.fl.core.publishing import Written, finish
from flrepo.fl.core.reporting import ParticipantWait
from flrepo.fl.core.resume import resume_point
from flrepo.fl.core.serving import Serving, advertised
from flrepo.fl.core.watch import Ended, Heartbeat, interrupt_main
from flrepo.fl.legacy import privacy
from flrepo.fl.legacy.strategy import ReportingStrategy
from flrepo.fl.privacy_accounting import Private
from flrepo.fl.task_model import fetch_model, training_settings

log = logging.getLogger(__name__)


def run(link: TaskLink, task: dict[str, Any], strategy: Strategy, serving: Serving, allow_unsigned: bool) -> int:
    """Train the task to its end: 0 when it Succeeded or was cancelled, 1 when it Failed."""
    repo = link.repo
    heartbeat: Heartbeat | None = None
    reporting: ReportingStrategy | None = None
    grpc_server = None
    written = Written()
    try:
        with tempfile.TemporaryDirectory(prefix="flrepo-collector-") as tmp:
            model = fetch_model(repo, task, Path(tmp), allow_unsigned)
            training = training_settings(task)
            model.check(training)
            resume = resume_point(repo, task)
            settings = strategy_setup.configure(strategy, task, model, resume.weights if resume else None)
            done = resume.round if resume else 0
            # The strategy samples from at least min_available_clients connected clients each round.
            needed = int(getattr(strategy, "min_available_clients", 1) or 1)
            wait = ParticipantWait(needed, float(task["participants_timeout"]))
            private = privacy.wrap(strategy, task, done)  # the task's DP: Flower's wrapper, accounted
            settings = {**settings, **private.settings}
            reporting = _reporting(link, task, private, {**training.as_config(), **private.config}, done, wait)
            client_manager = SimpleClientManager()
            grpc_server = start_grpc_server(
                client_manager=client_manager,
                server_address=serving.address,
                certificates=serving.tls.certificates() if serving.tls else None,
            )
            address = advertised(serving, grpc_server.bound_address)
            started(link, task, settings, resume, "legacy", address, serving.tls)
            wait.since = time.monotonic()  # participants have known where to go from now on
            stop_server = grpc_server.stop

            def stop(ended: Ended) -> None:
                stop_server(0)
                interrupt_main()

            timeout = float(task["heartbeat_timeout"])
            heartbeat = Heartbeat(link, timeout, reporting.progress, stop, shown=RUNNING_PROGRESS)
            heartbeat.start()
            remaining = int(task["rounds"]) - done
            if remaining > 0:
                log.info(
                    "Flower server (legacy gRPC) on %s, advertised as %s, TLS %s: num_rounds=%d, round_timeout=%s",
                    *(grpc_server.bound_address, address, "on" if serving.tls else "off"),
                    *(remaining, task.get("round_timeout")),
                )
                server = Server(client_manager=client_manager, strategy=reporting)
                run_fl(server, ServerConfig(num_rounds=remaining, round_timeout=task.get("round_timeout")))
            reporting.reporter.flush(final=True)  # the rounds' reports and checkpoints before the task's end
            heartbeat.stop()
            final, rounds_done = reporting.latest_weights(), done + reporting.rounds_done
            if final is None and resume is not None and remaining <= 0:
                final, rounds_done = resume.weights, done  # every round was done before the restart
            if final is None or rounds_done < int(task["rounds"]):
                raise RuntimeError(
                    f"training stopped after {rounds_done} of {task['rounds']} rounds without final weights"
                )
            last = reporting.last_loss, reporting.last_metrics
            figures, guarantee = reporting.reporter.figures(), private.guarantee()
            finish(link, model, final, *last, Path(tmp), written, figures, guarantee, reporting.reporter.held())
            return 0
    except KeyboardInterrupt:
        if heartbeat is None or heartbeat.ended is None:
            raise
        return _stopped(link, task, heartbeat.ended, written, reporting)
    except Exception as exc:
        if heartbeat is not None:
            heartbeat.stop()
        if heartbeat is not None and heartbeat.ended is not None:
            return _stopped(link, task, heartbeat.ended, written, reporting)
        if reporting is not None:
            reporting.reporter.flush()
        return fail(link, task, exc, written)
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if grpc_server is not None:
            grpc_server.stop(grace=1)


def _reporting(
    link: TaskLink,
    task: dict[str, Any],
    private: Private[Strategy],
    fit_config: dict[str, Any],
    done: int,
    wait: ParticipantWait,
) -> ReportingStrategy:
    """The strategy Flower runs: the task's (inside its DP wrapper, if any) behind the round reports and
    the task's compression (decoded before the wrapper sees an update)."""
    compression = Compression.of_task(task)
    return ReportingStrategy(
        private.strategy, private.link(link), fit_config, round_offset=done, participants=wait, compression=compression
    )


def _stopped(
    link: TaskLink, task: dict[str, Any], end: Ended, written: Written, reporting: ReportingStrategy | None
) -> int:
    """The task ended without this collector: its unsent round writes would be refused; drop them."""
    if reporting is not None:
        reporting.reporter.abandon()
    return stopped(link, task, end, written)
