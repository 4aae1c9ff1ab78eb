"""The trainer interface local executions call, and a built-in NumPy softmax-regression trainer.

To plug in your own model code, implement `Trainer` (four methods, NumPy arrays in and out) and
pass it to `LocalExecution`; the repository only ever sees the weights as an .npz file.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from flrepo.fl.weights import Weights


class Trainer(Protocol):
    def initial_weights(self, n_features: int, n_classes: int, seed: int = 0) -> Weights: ...

    def fit(
        self, weights: Weights, x: NDArray[Any], y: NDArray[Any], config: dict[str, Any]
    ) -> tuple[Weights, dict[str, float]]: ...

    def evaluate(self, weights: Weights, x: NDArray[Any], y: NDArray[Any]) -> tuple[float, dict[str, float]]: ...


def _softmax(z: NDArray[np.float64]) -> NDArray[np.float64]:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class SoftmaxRegression:
    """Multinomial logistic regression trained with mini-batch SGD; weights = [W (f x c), b (c)]."""

    def initial_weights(self, n_features: int, n_classes: int, seed: int = 0) -> Weights:
        rng = np.random.default_rng(seed)
        return [rng.normal(0, 0.01, size=(n_features, n_classes)), np.zeros(n_classes)]

    def fit(
        self, weights: Weights, x: NDArray[Any], y: NDArray[Any], config: dict[str, Any]
    ) -> tuple[Weights, dict[str, float]]:
        w, b = (np.array(a, dtype=np.float64) for a in weights)
        epochs = int(config.get("epochs", 1))
        batch = int(config.get("batch_size", 32))
        lr = float(config.get("learning_rate", 0.1))
        mu = float(config.get("proximal_mu", 0.0))  # FedProx: pull towards the global weights
        w0, b0 = w.copy(), b.copy()
        rng = np.random.default_rng(int(config.get("seed", 0)))
        onehot = np.eye(w.shape[1])[y]
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), batch):
                idx = order[start : start + batch]
                p = _softmax(x[idx] @ w + b)
                grad = (p - onehot[idx]) / len(idx)
                w -= lr * (x[idx].T @ grad + mu * (w - w0))
                b -= lr * (grad.sum(axis=0) + mu * (b - b0))
        loss, metrics = self.evaluate([w, b], x, y)
        return [w, b], {"train_loss": loss, "train_accuracy": metrics["accuracy"]}

    def evaluate(self, weights: Weights, x: NDArray[Any], y: NDArray[Any]) -> tuple[float, dict[str, float]]:
        w, b = weights
        p = _softmax(x @ w + b)
        loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
        accuracy = float((p.argmax(axis=1) == y).mean())
        return loss, {"accuracy": accuracy}
