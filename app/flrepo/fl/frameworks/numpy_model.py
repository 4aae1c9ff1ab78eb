"""The `numpy` client: multinomial logistic regression (softmax) on NumPy alone.

Its file is an .npz of two arrays, W (features x classes) and b (classes): the class count comes
from the weights, never from a constant. A model registered without a file starts from
`meta.features` and `meta.classes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flrepo.fl.frameworks.base import LocalModel, ModelError, Training, Weights, accuracy
from flrepo.fl.weights import from_npz, to_npz

DEFAULT_LEARNING_RATE = {"sgd": 0.1, "adam": 0.01}


def _softmax(z: NDArray[np.float64]) -> NDArray[np.float64]:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class NumpyModel(LocalModel):
    library = "numpy"
    suffix = ".npz"

    def __init__(self, w: NDArray[np.float64], b: NDArray[np.float64]) -> None:
        self.w, self.b = w, b

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> NumpyModel:
        try:
            weights = from_npz(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ModelError(f"not a NumPy .npz weights file ({exc})") from None
        if len(weights) != 2 or np.ndim(weights[0]) != 2 or np.shape(weights[1]) != (np.shape(weights[0])[1],):
            raise ModelError(f"a numpy model is two arrays, W (features x classes) and b; got {len(weights)} arrays")
        return cls(np.asarray(weights[0], np.float64), np.asarray(weights[1], np.float64))

    @classmethod
    def initial(cls, features: int, classes: int, seed: int = 0) -> NumpyModel:
        rng = np.random.default_rng(seed)
        return cls(rng.normal(0, 0.01, size=(features, classes)), np.zeros(classes))

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> NumpyModel:
        """A fresh model for a registration without a file, shaped by `meta.features` / `meta.classes`."""
        try:
            return cls.initial(int(meta["features"]), int(meta["classes"]))
        except (KeyError, TypeError, ValueError):
            raise ModelError("a numpy model without a file needs meta.features and meta.classes") from None

    def get_weights(self) -> Weights:
        return [self.w.copy(), self.b.copy()]

    def set_weights(self, weights: Weights) -> None:
        self.check_weights(weights)
        self.w, self.b = (np.array(a, dtype=np.float64) for a in weights)

    def sample_shape(self) -> tuple[int, ...]:
        return (self.w.shape[0],)

    def check(self, training: Training) -> None:
        if training.loss not in (None, "cross_entropy"):
            raise ModelError(
                f"the numpy client trains softmax regression: loss must be cross_entropy, not {training.loss}"
            )

    def fit(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> dict[str, float]:
        self._check_labels(y)
        optimizer = training.optimizer or "sgd"
        lr = training.learning_rate or DEFAULT_LEARNING_RATE[optimizer]
        w0, b0 = self.w.copy(), self.b.copy()
        rng = np.random.default_rng(training.seed)
        onehot = np.eye(self.w.shape[1])[y]
        moments = [np.zeros_like(self.w), np.zeros_like(self.w), np.zeros_like(self.b), np.zeros_like(self.b)]
        step = 0
        for _ in range(training.epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), training.batch_size):
                idx = order[start : start + training.batch_size]
                grad = (_softmax(x[idx] @ self.w + self.b) - onehot[idx]) / len(idx)
                gw = x[idx].T @ grad + training.proximal_mu * (self.w - w0)
                gb = grad.sum(axis=0) + training.proximal_mu * (self.b - b0)
                step += 1
                if optimizer == "adam":
                    gw, gb = _adam(gw, moments[0], moments[1], step), _adam(gb, moments[2], moments[3], step)
                self.w -= lr * gw
                self.b -= lr * gb
        loss, metrics = self.evaluate(x, y, training)
        return {"train_loss": loss, "train_accuracy": metrics["accuracy"]}

    def evaluate(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> tuple[float, dict[str, float]]:
        self._check_labels(y)
        p = _softmax(x @ self.w + self.b)
        loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
        return loss, {"accuracy": accuracy(p.argmax(axis=1), y)}

    def save(self, path: Path) -> None:
        path.write_bytes(to_npz(self.get_weights()))

    def _check_labels(self, y: NDArray[Any]) -> None:
        classes = self.w.shape[1]
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() >= classes)):
            raise ModelError(f"labels must be class ids 0..{classes - 1} for this numpy model")


def _adam(g: NDArray[Any], m: NDArray[Any], v: NDArray[Any], t: int) -> NDArray[Any]:
    """Adam's step direction for gradient g, updating the moment estimates m, v in place."""
    m *= 0.9
    m += 0.1 * g
    v *= 0.999
    v += 0.001 * g * g
    return (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
