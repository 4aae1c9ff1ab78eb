"""A local execution: a Flower client that trains the task's model on local data.

It downloads the task's transformations (verifying their signatures), applies them to its data,
keeps a local validation split, and trains with the trainer for the configured epochs.
"""

from __future__ import annotations

import logging
from typing import Any

import flwr
import numpy as np
from flwr.client import NumPyClient
from numpy.typing import NDArray

from flrepo.client import RepositoryClient
from flrepo.fl import pinning
from flrepo.fl.trainer import SoftmaxRegression, Trainer
from flrepo.fl.transformations import train_validation_split
from flrepo.fl.weights import Weights

log = logging.getLogger(__name__)


class LocalExecution(NumPyClient):
    def __init__(self, trainer: Trainer, x: NDArray[Any], y: NDArray[Any], seed: int = 0) -> None:
        self.trainer = trainer
        self.x_train, self.y_train, self.x_val, self.y_val = train_validation_split(x, y, 0.2, seed)
        self.seed = seed

    def get_parameters(self, config: dict[str, Any]) -> Weights:
        return self.trainer.initial_weights(self.x_train.shape[1], 10, self.seed)

    def fit(self, parameters: Weights, config: dict[str, Any]) -> tuple[Weights, int, dict[str, Any]]:
        config = {**config, "seed": self.seed + int(config.get("server_round", 0))}
        weights, metrics = self.trainer.fit(parameters, self.x_train, self.y_train, config)
        return weights, len(self.y_train), metrics

    def evaluate(self, parameters: Weights, config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        loss, metrics = self.trainer.evaluate(parameters, self.x_val, self.y_val)
        return loss, len(self.y_val), metrics


def prepare_data(
    repo: RepositoryClient, task: dict[str, Any], x: NDArray[Any], y: NDArray[Any], allow_unsigned: bool
) -> tuple[NDArray[Any], NDArray[Any]]:
    for ref in task.get("transformations") or []:
        loaded = pinning.load_transformation(repo, task, ref["id"], allow_unsigned)  # the pinned version
        transform = loaded(**(ref.get("parameters") or {})) if isinstance(loaded, type) else loaded
        x, y = transform(x, y)
    return np.asarray(x, dtype=np.float64), np.asarray(y)


def run(
    repo: RepositoryClient,
    task_id: str,
    server: str,
    x: NDArray[Any],
    y: NDArray[Any],
    allow_unsigned: bool = False,
    seed: int = 0,
    trainer: Trainer | None = None,
) -> None:
    task = repo.get_task(task_id).model_dump()
    x, y = prepare_data(repo, task, x, y, allow_unsigned)
    client = LocalExecution(trainer or SoftmaxRegression(), x, y, seed)
    log.info("local execution for task %s: %d training samples, server %s", task_id, len(client.y_train), server)
    flwr.client.start_client(server_address=server, client=client.to_client(), insecure=True, max_wait_time=60)
