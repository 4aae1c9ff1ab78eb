"""The training collector: runs one repository task to its end and reports every round.

It reads the task, loads the signed strategy and the task's model (the client its `meta.library`
names) and applies the task's explicit settings. The strategy's type chooses the Flower runtime:
a legacy `flwr.server.strategy` object runs on Flower's gRPC server (the aerOS-compatible path,
here), a `flwr.serverapp.strategy` object on Flower's SuperLink/SuperNode runtime with a ServerApp
(flrepo.fl.message). Either way the collector publishes where participants connect (and, with
TLS, the CA to trust) in the task's status, heartbeats while it runs, stops when the task is
cancelled, bounds the wait for participants, checkpoints the aggregated weights after every round,
and on success publishes the trained model as a new version of the task's model in its native
format, beside the aerOS training result (results + .npz weights).

A collector started again for a task whose collector died (within the task's heartbeat_timeout)
resumes after the last checkpoint: the completed rounds are not repeated and the round count stays
the configured one.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.server import Server, run_fl
from flwr.server.strategy import Strategy
from flwr.server.superlink.fleet.grpc_bidi.grpc_server import start_grpc_server

from flrepo.client import RepositoryClient, RepositoryError
from flrepo.fl import pinning, strategy_setup
from flrepo.fl.heartbeat import IDENTITY, Ended, Heartbeat, interrupt_main
from flrepo.fl.publishing import Resume, Written, finish, last_checkpoint, undo
from flrepo.fl.reporting import ParticipantWait, ReportingStrategy
from flrepo.fl.task_model import fetch_model, training_settings
from flrepo.fl.tls import ServerTls
from flrepo.schemas.tasks import TERMINAL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Serving:
    """How the collector serves its participants."""

    address: str = "0.0.0.0:8080"  # where Flower listens (HOST:PORT)
    advertise: str | None = None  # what participants are told, when it differs (a Kubernetes Service)
    tls: ServerTls | None = None
    insecure: bool = False  # Message-API runtime: plaintext only when asked for explicitly


def advertised(serving: Serving, bound: str) -> str:
    """The address participants are given: --advertise, else the bound one with a wildcard host
    replaced by this host's name."""
    if serving.advertise:
        return serving.advertise
    host, _, port = bound.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"


def runtime_of(strategy: object, name: str) -> str:
    """ "legacy" or "message" by the strategy's type; TypeError for anything else."""
    if isinstance(strategy, Strategy):
        return "legacy"
    from flwr.serverapp.strategy import Strategy as MessageStrategy

    if isinstance(strategy, MessageStrategy):
        return "message"
    raise TypeError(
        f"strategy {name!r} is a {type(strategy).__name__}, neither a flwr.server.strategy nor a "
        "flwr.serverapp.strategy Strategy"
    )


def run(repo: RepositoryClient, task_id: str, serving: Serving, allow_unsigned: bool = False) -> int:
    """Run the task to its end: 0 when it Succeeded or was cancelled, 1 when it Failed (the task says why)."""
    task = repo.get_task(task_id).model_dump()
    if task["phase"] in TERMINAL:
        log.error("task %s is %s already; nothing to run", task_id, task["phase"])
        return 1
    name = task["strategy"]["strategy_name"]
    try:
        strategy = pinning.load_strategy(repo, task, allow_unsigned)  # the pinned version, signature checked
        runtime = runtime_of(strategy, name)
    except Exception as exc:
        return fail(repo, task, exc, Written())
    if runtime == "message":
        from flrepo.fl.message.collector import run as run_message

        return run_message(repo, task, serving, allow_unsigned)
    return _run_legacy(repo, task, strategy, serving, allow_unsigned)


def _run_legacy(
    repo: RepositoryClient, task: dict[str, Any], strategy: Strategy, serving: Serving, allow_unsigned: bool
) -> int:
    """Flower's legacy gRPC server in this process (its main thread, where a cancel interrupts it)."""
    task_id = task["task_id"]
    heartbeat: Heartbeat | None = None
    grpc_server = None
    written = Written()
    try:
        with tempfile.TemporaryDirectory(prefix="flrepo-collector-") as tmp:
            model = fetch_model(repo, task, Path(tmp), allow_unsigned)
            training = training_settings(task)
            model.check(training)
            resume = last_checkpoint(repo, task_id) if task["phase"] == "Running" else None
            settings = strategy_setup.configure(strategy, task, model, resume.weights if resume else None)
            done = resume.round if resume else 0
            # The strategy samples from at least min_available_clients connected clients each round.
            needed = int(getattr(strategy, "min_available_clients", 1) or 1)
            wait = ParticipantWait(needed, float(task["participants_timeout"]))
            reporting = ReportingStrategy(
                strategy, repo, task_id, training.as_config(), round_offset=done, participants=wait
            )
            client_manager = SimpleClientManager()
            grpc_server = start_grpc_server(
                client_manager=client_manager,
                server_address=serving.address,
                certificates=serving.tls.certificates() if serving.tls else None,
            )
            address = advertised(serving, grpc_server.bound_address)
            started(repo, task, settings, resume, "legacy", address, serving.tls)
            wait.since = time.monotonic()  # participants have known where to go from now on
            stop_server = grpc_server.stop

            def stop(ended: Ended) -> None:
                stop_server(0)
                interrupt_main()

            heartbeat = Heartbeat(repo, task_id, float(task["heartbeat_timeout"]), reporting.progress, stop)
            heartbeat.start()
            remaining = int(task["rounds"]) - done
            if remaining > 0:
                log.info(
                    "Flower server (legacy gRPC) on %s, advertised as %s, TLS %s: num_rounds=%d, round_timeout=%s",
                    grpc_server.bound_address,
                    address,
                    "on" if serving.tls else "off",
                    remaining,
                    task.get("round_timeout"),
                )
                server = Server(client_manager=client_manager, strategy=reporting)
                run_fl(server, ServerConfig(num_rounds=remaining, round_timeout=task.get("round_timeout")))
            heartbeat.stop()
            final, rounds_done = reporting.latest_weights(), done + reporting.rounds_done
            if final is None and resume is not None and remaining <= 0:
                final, rounds_done = resume.weights, done  # every round was done before the restart
            if final is None or rounds_done < int(task["rounds"]):
                raise RuntimeError(
                    f"training stopped after {rounds_done} of {task['rounds']} rounds without final weights"
                )
            finish(repo, task_id, model, final, reporting.last_loss, reporting.last_metrics, Path(tmp), written)
            return 0
    except KeyboardInterrupt:
        if heartbeat is None or heartbeat.ended is None:
            raise
        return stopped(repo, task, heartbeat.ended, written)
    except Exception as exc:
        if heartbeat is not None:
            heartbeat.stop()
        if heartbeat is not None and heartbeat.ended is not None:
            return stopped(repo, task, heartbeat.ended, written)
        return fail(repo, task, exc, written)
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if grpc_server is not None:
            grpc_server.stop(grace=1)


def started(
    repo: RepositoryClient,
    task: dict[str, Any],
    settings: dict[str, Any] | None,
    resume: Resume | None,
    runtime: str,
    address: str,
    tls: ServerTls | None,
) -> None:
    """Running, with where participants connect and what they trust."""
    fields: dict[str, Any] = {
        "phase": "Running",
        "runtime": runtime,
        "server_address": address,
        "collector": IDENTITY,
        "active": 0,
    }
    if settings is not None:
        fields["strategy_settings"] = settings
    if tls is not None:
        fields["server_ca"] = tls.ca_pem
    how = f"Flower {'SuperLink' if runtime == 'message' else 'server'} on {address} ({'TLS' if tls else 'plaintext'})"
    if resume:
        fields.update(
            reason="Resumed",
            message=f"{how}; resumed after round {resume.round} (its checkpoint)",
            resumed_from_round=resume.round,
        )
    else:
        fields.update(reason="ServerStarted", message=how)
    repo.update_task_status(task["task_id"], **fields)


def stopped(repo: RepositoryClient, task: dict[str, Any], ended: Ended, written: Written) -> int:
    """The task ended without this collector (cancelled, failed by a site or the service): 0 when
    cancelled, else 1; nothing this run wrote is left behind."""
    undo(repo, task, written)
    log.warning("task %s ended while it ran: %s; collector stopped", task["task_id"], ended)
    return 0 if ended.cancelled else 1


def fail(repo: RepositoryClient, task: dict[str, Any], exc: BaseException, written: Written) -> int:
    """Mark the task Failed with the exception's class as reason (unless it ended otherwise meanwhile)."""
    task_id = task["task_id"]
    undo(repo, task, written)
    try:
        now = repo.get_task(task_id)
        if now.phase in TERMINAL:  # cancelled (or failed by a site) while this collector finished up
            return stopped(repo, task, Ended.of(now), Written())
        log.error("task %s failed: %s", task_id, exc, exc_info=exc)
        repo.update_task_status(task_id, phase="Failed", reason=type(exc).__name__, message=str(exc)[:2000], active=0)
    except RepositoryError as report_error:
        log.error("could not mark task %s Failed: %s", task_id, report_error)
    return 1
