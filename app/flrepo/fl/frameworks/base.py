"""What every framework client does, and the training settings they share.

A `LocalModel` wraps one model loaded from its self-contained file (no uploader code runs): it
hands its weights to Flower as NumPy arrays in a stable order and takes them back, trains and
evaluates on local arrays with the task's settings, and saves itself in its native format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

Weights = list[NDArray[Any]]
OPTIMIZERS = ("sgd", "adam")
LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")
# The task's `training` keys the clients understand; anything else fails the task at once.
TRAINING_KEYS = ("epochs", "batch_size", "learning_rate", "optimizer", "loss")


class ModelError(ValueError):
    """The model cannot be trained as asked: wrong file for its library, no client for the library,
    settings the client does not support, data that does not fit it. The message names the problem."""


@dataclass(frozen=True)
class Training:
    """One round's local training: the task's `training` settings plus what the strategy sends."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float | None = None  # None: the optimizer's usual default
    optimizer: str | None = None  # None: the model's own (compiled Keras) or the client's default
    loss: str | None = None  # None: the model's own (compiled Keras) or cross_entropy
    proximal_mu: float = 0.0  # FedProx: pull towards the global weights
    seed: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Training:
        """Settings from a task's `training` (or a Flower fit config carrying them); ModelError when
        a value is of the wrong kind or unknown."""
        try:
            settings = cls(
                epochs=int(config.get("epochs", 1)),
                batch_size=int(config.get("batch_size", 32)),
                learning_rate=None if config.get("learning_rate") is None else float(config["learning_rate"]),
                optimizer=config.get("optimizer") or None,
                loss=config.get("loss") or None,
                proximal_mu=float(config.get("proximal_mu", 0.0)),
                seed=int(config.get("seed", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"invalid training settings: {exc}") from None
        if settings.optimizer not in (None, *OPTIMIZERS):
            raise ModelError(f"unknown optimizer {settings.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if settings.loss not in (None, *LOSSES):
            raise ModelError(f"unknown loss {settings.loss!r}; use one of {', '.join(LOSSES)}")
        if settings.epochs < 1 or settings.batch_size < 1:
            raise ModelError("epochs and batch_size must be at least 1")
        return settings

    def as_config(self) -> dict[str, int | float | str]:
        """The settings as Flower config values (scalars; unset ones left out)."""
        values = {"epochs": self.epochs, "batch_size": self.batch_size}
        extra = {"learning_rate": self.learning_rate, "optimizer": self.optimizer, "loss": self.loss}
        return {**values, **{k: v for k, v in extra.items() if v is not None}}


def unknown_training_keys(training: Mapping[str, Any]) -> list[str]:
    return sorted(set(training) - set(TRAINING_KEYS))


class LocalModel(ABC):
    """A model of one library, loaded from its file; see the module docstring."""

    library: ClassVar[str]
    suffix: ClassVar[str]  # the native file suffix, for the trained model's file name

    @classmethod
    @abstractmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> LocalModel:
        """The model in `path` (ModelError if it is not this library's format)."""

    @abstractmethod
    def get_weights(self) -> Weights: ...

    @abstractmethod
    def set_weights(self, weights: Weights) -> None: ...

    @abstractmethod
    def sample_shape(self) -> tuple[int, ...] | None:
        """The shape of one input sample the model expects (None when it cannot tell)."""

    @abstractmethod
    def fit(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> dict[str, float]:
        """Train in place; the metrics of the last epoch (`train_loss`, `train_accuracy` if classifying)."""

    @abstractmethod
    def evaluate(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> tuple[float, dict[str, float]]:
        """(loss, metrics) on `x`, `y`; metrics has `accuracy` when the model classifies."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the model, with its current weights, in its native self-contained format."""

    def check(self, training: Training) -> None:  # noqa: B027 (most clients take every setting)
        """ModelError when this client cannot train with `training` (checked before any round)."""

    def check_data(self, x: NDArray[Any]) -> None:
        """ModelError when samples of this shape do not fit the model's input."""
        expected = self.sample_shape()
        if expected is not None and tuple(x.shape[1:]) != expected:
            raise ModelError(f"the data has {_shape(x.shape[1:])} per sample, the model expects {_shape(expected)}")

    def check_weights(self, weights: Weights) -> None:
        """ModelError unless `weights` have this model's shapes (e.g. a strategy's own initial_parameters)."""
        mine = [np.shape(w) for w in self.get_weights()]
        theirs = [np.shape(w) for w in weights]
        if mine != theirs:
            raise ModelError(f"weights of shapes {theirs} do not fit this {self.library} model ({mine})")


def _shape(shape: tuple[int, ...]) -> str:
    return f"{shape[0]} feature{'s' if shape[0] != 1 else ''}" if len(shape) == 1 else f"shape {shape}"


def accuracy(predicted: NDArray[Any], y: NDArray[Any]) -> float:
    return float(np.mean(predicted.reshape(-1) == y.reshape(-1))) if len(y) else 0.0
