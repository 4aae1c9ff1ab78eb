"""A local execution: a Flower client that trains the task's model on this site's own data.

It loads the task's model with the client its `meta.library` names, applies the task's (signed)
transformations to the local data, checks that the data fits the model, keeps a local validation
split, and then trains and evaluates whatever weights the collector sends, round after round.
Data or a model it cannot use fails the task at once, with the reason, before it joins.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
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
from flrepo.fl.local_data import DataError
from flrepo.fl.task_model import fetch_model, training_settings
from flrepo.fl.transformations import train_validation_split
from flrepo.schemas.tasks import TERMINAL

log = logging.getLogger(__name__)
# How long a local execution keeps trying to reach a collector that went away mid-task.
RECONNECT_SECONDS = 300.0


class LocalExecution(NumPyClient):
    """Flower's side of one site: weights in, local training, weights out."""

    def __init__(self, model: LocalModel, x: NDArray[Any], y: NDArray[Any], training: Training, seed: int = 0) -> None:
        self.model = model
        self.training = training
        self.x_train, self.y_train, self.x_val, self.y_val = train_validation_split(x, y, 0.2, seed)
        self.seed = seed

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
    server: str,
    x: NDArray[Any],
    y: NDArray[Any],
    allow_unsigned: bool = False,
    seed: int = 0,
) -> int:
    """Join the task's training with local data (x, y); 0 when the collector ended it, 1 when this
    site could not take part (the task is then Failed with the reason)."""
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
        client = LocalExecution(model, x, y, training, seed)
        log.info("local execution for task %s: %d training samples, server %s", task_id, len(client.y_train), server)
        return _serve(repo, task_id, server, client)


def _serve(repo: RepositoryClient, task_id: str, server: str, client: LocalExecution) -> int:
    """Take part until the collector ends the training; reconnect when the collector goes away
    while the task still runs (a collector restarted for the task resumes from its checkpoint)."""
    lost_since: float | None = None
    while True:
        try:
            flwr.client.start_client(server_address=server, client=client.to_client(), insecure=True, max_wait_time=60)
            return 0
        except grpc.RpcError as exc:
            phase = _phase(repo, task_id)
            if phase in TERMINAL:
                return 0 if phase == "Succeeded" else 1
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > RECONNECT_SECONDS:
                log.error("task %s: no collector for %.0f s; giving up", task_id, RECONNECT_SECONDS)
                return 1
            log.warning(
                "task %s: lost the collector (%s); reconnecting", task_id, exc.code() if hasattr(exc, "code") else exc
            )
            time.sleep(2)


def _phase(repo: RepositoryClient, task_id: str) -> str | None:
    try:
        return repo.get_task(task_id).phase
    except RepositoryError:
        return None
