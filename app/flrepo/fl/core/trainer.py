"""A site's trainer, whichever Flower runtime carries its messages: the task's model, the site's
data after the task's transformations (checked against the model, with a local validation split),
and fit/evaluate of whatever weights the collector sends. No Flower types: each runtime's client
(flrepo.fl.legacy.participant, flrepo.fl.message.client) adapts it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flrepo.client import RepositoryClient
from flrepo.fl import pinning
from flrepo.fl.core import compression
from flrepo.fl.frameworks import LocalModel, Training, Weights
from flrepo.fl.local_data import DataError
from flrepo.fl.task_model import fetch_model, training_settings
from flrepo.fl.transformations import train_validation_split

VALIDATION_SHARE = 0.2


class SiteTrainer:
    """One site's model and data split: weights in, local training or evaluation, weights out."""

    def __init__(
        self,
        model: LocalModel,
        split: tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]],
        training: Training,
        seed: int = 0,
    ) -> None:
        self.model, self.training, self.seed = model, training, seed
        self.x_train, self.y_train, self.x_val, self.y_val = split
        # Where this site keeps its error-feedback residual (flrepo.fl.core.compression); None: nowhere.
        self.residual_file: Path | None = None

    @classmethod
    def split(
        cls, model: LocalModel, x: NDArray[Any], y: NDArray[Any], training: Training, seed: int = 0
    ) -> SiteTrainer:
        """One that keeps a seeded share of (x, y) for validation."""
        return cls(model, train_validation_split(x, y, VALIDATION_SHARE, seed), training, seed)

    def settings(self, config: dict[str, Any]) -> Training:
        """The round's settings: the collector's config carries the task's settings and the
        strategy's (FedProx's mu); the seed changes with the round."""
        merged = {**self.training.as_config(), **config}
        merged["seed"] = self.seed + int(config.get("server_round", 0))
        return Training.from_config(merged)

    def weights(self) -> Weights:
        return self.model.get_weights()

    def fit(self, weights: Weights, config: dict[str, Any]) -> tuple[Weights, int, dict[str, Any]]:
        self.model.set_weights(weights)
        metrics = self.model.fit(self.x_train, self.y_train, self.settings(config))
        return self.model.get_weights(), len(self.y_train), metrics

    def evaluate(self, weights: Weights, config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        self.model.set_weights(weights)
        loss, metrics = self.model.evaluate(self.x_val, self.y_val, self.settings(compression.strip_config(config)))
        return loss, len(self.y_val), metrics

    def fit_update(
        self, received: Weights, config: dict[str, Any], decode_ms: float = 0.0
    ) -> tuple[compression.Update, int, dict[str, Any]]:
        """`fit`, its result encoded as the round's config asks (the task's `compression`): plain
        weights, or the compressed delta; with the codec ms in the metrics when compressing."""
        spec = compression.Compression.of_config(config)
        weights, samples, metrics = self.fit(received, compression.strip_config(config))
        update = compression.encode_update(received, weights, spec, self.residual_file)
        if spec.active:
            metrics = {**metrics, compression.ENCODE_MS: update.encode_ms, compression.DECODE_MS: decode_ms}
        return update, samples, metrics


def prepare_data(
    repo: RepositoryClient, task: dict[str, Any], x: NDArray[Any], y: NDArray[Any], allow_unsigned: bool
) -> tuple[NDArray[Any], NDArray[Any]]:
    """The local data after the task's transformations, in order."""
    for ref in task.get("transformations") or []:
        loaded = pinning.load_transformation(repo, task, ref["id"], allow_unsigned)  # the pinned version
        transform = loaded(**(ref.get("parameters") or {})) if isinstance(loaded, type) else loaded
        x, y = transform(x, y)
    return np.asarray(x, dtype=np.float64), np.asarray(y)


def prepare(
    repo: RepositoryClient,
    task: dict[str, Any],
    x: NDArray[Any],
    y: NDArray[Any],
    workdir: Path,
    allow_unsigned: bool = False,
    seed: int = 0,
    loaded: Callable[[], object] | None = None,
) -> SiteTrainer:
    """The site's trainer for the task: ModelError or DataError when the model or the data cannot
    be used (the site then fails the task before it joins). `loaded` is called once the model is
    loaded, before its framework runs any operation (the local execution forks there)."""
    model = fetch_model(repo, task, workdir, allow_unsigned)
    if loaded is not None:
        loaded()
    training = training_settings(task)
    model.check(training)
    x, y = prepare_data(repo, task, x, y, allow_unsigned)
    model.check_data(x)
    if len(y) < 2:
        raise DataError(f"{len(y)} sample{'s' if len(y) != 1 else ''}: too few to train and validate")
    trainer = SiteTrainer.split(model, x, y, training, seed)
    trainer.residual_file = compression.residual_file(repo.base_url, task["task_id"], seed, trainer.x_train)
    return trainer
