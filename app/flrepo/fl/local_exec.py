"""A local execution: a Flower client that trains the task's model on this site's own data.

It loads the task's model with the client its `meta.library` names, applies the task's (signed)
transformations to the local data, checks that the data fits the model, keeps a local validation
split, and then trains and evaluates whatever weights the collector sends, round after round.
Data or a model it cannot use fails the task at once, with the reason, before it joins.

Where to connect comes from the task: the collector publishes its address, runtime and (with TLS)
the CA to trust in the task's status, and the local execution waits for that (bounded) unless
told `--server`. On the legacy runtime it is a Flower gRPC client in this process; on the
Message-API runtime it runs Flower's SuperNode (flrepo.fl.message.participant). It exits when the
task ends: 0 when it Succeeded or was cancelled, 1 when it Failed.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flwr
import grpc
import numpy as np
from flwr.client import NumPyClient
from numpy.typing import NDArray

from flrepo.client import RepositoryClient, RepositoryError
from flrepo.fl import pinning
from flrepo.fl.frameworks import LocalModel, ModelError, Training, Weights
from flrepo.fl.heartbeat import Ended, TaskWatch
from flrepo.fl.local_data import DataError
from flrepo.fl.task_model import fetch_model, training_settings
from flrepo.fl.transformations import train_validation_split
from flrepo.schemas.tasks import TERMINAL

log = logging.getLogger(__name__)
# How long a local execution keeps trying to reach a collector that went away mid-task.
RECONNECT_SECONDS = 300.0
# How long it waits, by default, for a collector to publish where to connect.
DISCOVERY_SECONDS = 600.0


class DiscoveryTimeout(RuntimeError):
    """No collector published an address for the task in time."""


class Stopped(Exception):
    """The task ended while Flower's client was mid-call. The process should end at once with
    `code` (flrepo.cli does, with os._exit): at a normal interpreter exit, gRPC's finalizer of the
    channel cut mid-stream can wait forever."""

    def __init__(self, code: int) -> None:
        super().__init__(f"stopped with exit code {code}")
        self.code = code


@dataclass(frozen=True)
class Connection:
    """Where and how to reach the task's collector."""

    runtime: str  # legacy | message
    address: str
    ca: bytes | None  # PEM certificates to trust; None: plaintext


@dataclass(frozen=True)
class Site:
    """How this site connects, beyond the address: its own CA override, its SuperNode key."""

    server: str | None = None  # overrides the published address (e.g. behind a tunnel)
    root_certificates: bytes | None = None  # overrides the published CA
    key: Path | None = None  # Message-API runtime: the SuperNode's private key (OpenSSH ECDSA)
    insecure: bool = False  # Message-API runtime: plaintext, when the collector runs --insecure
    wait: float = DISCOVERY_SECONDS


def exit_code(ended: Ended) -> int:
    return 0 if ended.phase == "Succeeded" or ended.cancelled else 1


def discover(repo: RepositoryClient, task_id: str, site: Site) -> Connection | Ended:
    """Wait until the task's collector has published its address (or the task has ended)."""
    deadline = time.monotonic() + site.wait
    while True:
        task = repo.get_task(task_id)
        if task.phase in TERMINAL:
            return Ended.of(task)
        if task.phase == "Running" and task.server_address and task.runtime:
            ca = site.root_certificates or (task.server_ca.encode() if task.server_ca else None)
            return Connection(task.runtime, site.server or task.server_address, ca)
        if time.monotonic() > deadline:
            raise DiscoveryTimeout(
                f"task {task_id}: no training collector published its address within {site.wait:g} s "
                f"(the task is {task.phase})"
            )
        time.sleep(1)


class LocalExecution(NumPyClient):
    """Flower's side of one site: weights in, local training, weights out."""

    def __init__(self, model: LocalModel, x: NDArray[Any], y: NDArray[Any], training: Training, seed: int = 0) -> None:
        self.model = model
        self.training = training
        self.x_train, self.y_train, self.x_val, self.y_val = train_validation_split(x, y, 0.2, seed)
        self.seed = seed

    @classmethod
    def from_split(
        cls, model: LocalModel, split: tuple[NDArray[Any], ...], training: Training, seed: int
    ) -> LocalExecution:
        """One whose data is already split (x_train, y_train, x_val, y_val)."""
        client = cls.__new__(cls)
        client.model, client.training, client.seed = model, training, seed
        client.x_train, client.y_train, client.x_val, client.y_val = split
        return client

    def _settings(self, config: dict[str, Any]) -> Training:
        # The collector's config carries the task's settings and the strategy's (FedProx's mu).
        merged = {**self.training.as_config(), **config}
        merged["seed"] = self.seed + int(config.get("server_round", 0))
        return Training.from_config(merged)

    def get_parameters(self, config: dict[str, Any]) -> Weights:
        return self.model.get_weights()

    def fit(self, parameters: Weights, config: dict[str, Any]) -> tuple[Weights, int, dict[str, Any]]:
        self.model.set_weights(parameters)
        metrics = self.model.fit(self.x_train, self.y_train, self._settings(config))
        return self.model.get_weights(), len(self.y_train), metrics

    def evaluate(self, parameters: Weights, config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        self.model.set_weights(parameters)
        loss, metrics = self.model.evaluate(self.x_val, self.y_val, self._settings(config))
        return loss, len(self.y_val), metrics


def prepare_data(
    repo: RepositoryClient, task: dict[str, Any], x: NDArray[Any], y: NDArray[Any], allow_unsigned: bool
) -> tuple[NDArray[Any], NDArray[Any]]:
    """The local data after the task's transformations, in order."""
    for ref in task.get("transformations") or []:
        loaded = pinning.load_transformation(repo, task, ref["id"], allow_unsigned)  # the pinned version
        transform = loaded(**(ref.get("parameters") or {})) if isinstance(loaded, type) else loaded
        x, y = transform(x, y)
    return np.asarray(x, dtype=np.float64), np.asarray(y)


def fail_task(repo: RepositoryClient, task_id: str, exc: Exception) -> None:
    """Mark the task Failed with this site's reason (unless it has ended already)."""
    try:
        if repo.get_task(task_id).phase in TERMINAL:
            return
        message = f"local execution on {socket.gethostname()}: {exc}"[:2000]
        repo.update_task_status(task_id, phase="Failed", reason=type(exc).__name__, message=message)
    except RepositoryError as report_error:
        log.error("could not mark task %s Failed: %s", task_id, report_error)


def run(
    repo: RepositoryClient,
    task_id: str,
    site: Site,
    x: NDArray[Any],
    y: NDArray[Any],
    allow_unsigned: bool = False,
    seed: int = 0,
) -> int:
    """Join the task's training with local data (x, y); 0 when the task Succeeded or was cancelled,
    1 when it Failed or this site could not take part (the task is then Failed with the reason)."""
    task = repo.get_task(task_id).model_dump()
    with tempfile.TemporaryDirectory(prefix="flrepo-local-") as tmp:
        try:
            model = fetch_model(repo, task, Path(tmp), allow_unsigned)
            training = training_settings(task)
            model.check(training)
            x, y = prepare_data(repo, task, x, y, allow_unsigned)
            model.check_data(x)
            if len(y) < 2:
                raise DataError(f"{len(y)} sample{'s' if len(y) != 1 else ''}: too few to train and validate")
        except (ModelError, DataError) as exc:
            log.error("task %s: %s", task_id, exc)
            fail_task(repo, task_id, exc)
            return 1
        found = discover(repo, task_id, site)
        if isinstance(found, Ended):
            log.warning("task %s ended before this site joined: %s", task_id, found)
            return exit_code(found)
        client = LocalExecution(model, x, y, training, seed)
        log.info(
            "local execution for task %s: %d training samples, %s runtime at %s (%s)",
            task_id,
            len(client.y_train),
            found.runtime,
            found.address,
            "TLS" if found.ca else "plaintext",
        )
        if found.runtime == "message":
            from flrepo.fl.message.participant import run as run_supernode

            return run_supernode(repo, task, found, site, client, Path(tmp))
        return _serve(repo, task_id, found, client)


def _serve(repo: RepositoryClient, task_id: str, found: Connection, client: LocalExecution) -> int:
    """Take part until the collector ends the training; reconnect when the collector goes away
    while the task still runs (a collector restarted for the task resumes from its checkpoint);
    stop when the task ends without it (cancelled, failed)."""
    watch = TaskWatch(repo, task_id)
    watch.start()
    lost_since: float | None = None
    try:
        while True:
            try:
                flwr.client.start_client(
                    server_address=found.address,
                    client=client.to_client(),
                    insecure=found.ca is None,
                    root_certificates=found.ca,
                    max_wait_time=60,
                )
                return 0
            except grpc.RpcError as exc:
                phase = _phase(repo, task_id)
                if phase is not None and phase.phase in TERMINAL:
                    return exit_code(phase)
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > RECONNECT_SECONDS:
                    log.error("task %s: no collector for %.0f s; giving up", task_id, RECONNECT_SECONDS)
                    return 1
                code = exc.code() if hasattr(exc, "code") else exc
                log.warning("task %s: lost the collector (%s); reconnecting", task_id, code)
                time.sleep(2)
    except KeyboardInterrupt:
        if watch.ended is None:
            raise
        log.warning("task %s ended: %s; local execution stopped", task_id, watch.ended)
        raise Stopped(exit_code(watch.ended)) from None
    finally:
        watch.stop()


def _phase(repo: RepositoryClient, task_id: str) -> Ended | None:
    """The task's phase (and how it ended, if it did); None when the repository cannot say."""
    try:
        return Ended.of(repo.get_task(task_id))
    except RepositoryError:
        return None
