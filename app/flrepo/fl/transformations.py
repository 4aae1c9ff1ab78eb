"""Built-in data transformations for local executions.

Interface: a transformation is a class; `cls(**parameters)` makes one, and calling it as
`t(x, y) -> (x, y)` transforms a local data set (features, labels as NumPy arrays). Each class
carries its aerOS metadata in `AEROS`. They are stored pickled (by reference: loading needs the
flrepo package installed) and signed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

_NEEDS = {"storage": 0, "RAM": 0, "GPU": False, "preinstalled_libraries": {"numpy": ">=1.26"}, "available_models": {}}


class MinMaxScaling:
    """Scale features linearly from [low, high] to [0, 1] (fixed bounds: every client scales alike)."""

    AEROS: ClassVar[dict[str, Any]] = {
        "id": "flrepo.min_max_scaling",
        "description": "Scale features from [low, high] to [0, 1]",
        "parameter_types": {"low": "float", "high": "float"},
        "default_values": {"low": 0.0, "high": 1.0},
        "outputs": ["np.ndarray", "np.ndarray"],
        "needs": _NEEDS,
    }

    def __init__(self, low: float = 0.0, high: float = 1.0) -> None:
        if high <= low:
            raise ValueError("high must be greater than low")
        self.low, self.high = float(low), float(high)

    def __call__(self, x: NDArray[Any], y: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        return (np.asarray(x, dtype=np.float64) - self.low) / (self.high - self.low), y


class StandardScaling:
    """Zero mean, unit variance per feature, computed on the local data (constant features stay 0)."""

    AEROS: ClassVar[dict[str, Any]] = {
        "id": "flrepo.standard_scaling",
        "description": "Standardize features to zero mean and unit variance",
        "parameter_types": {"epsilon": "float"},
        "default_values": {"epsilon": 1e-8},
        "outputs": ["np.ndarray", "np.ndarray"],
        "needs": _NEEDS,
    }

    def __init__(self, epsilon: float = 1e-8) -> None:
        self.epsilon = float(epsilon)

    def __call__(self, x: NDArray[Any], y: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        x = np.asarray(x, dtype=np.float64)
        return (x - x.mean(axis=0)) / (x.std(axis=0) + self.epsilon), y


class OneHotLabels:
    """Labels 0..categories-1 as one-hot rows (the aerOS categorical transformation)."""

    AEROS: ClassVar[dict[str, Any]] = {
        "id": "flrepo.one_hot_labels",
        "description": "The class transforming y data into categorical data",
        "parameter_types": {"categories": "int"},
        "default_values": {"categories": 10},
        "outputs": ["np.ndarray", "np.ndarray"],
        "needs": _NEEDS,
    }

    def __init__(self, categories: int = 10) -> None:
        self.categories = int(categories)

    def __call__(self, x: NDArray[Any], y: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        return x, np.eye(self.categories)[np.asarray(y, dtype=np.int64)]


BUILTIN = (MinMaxScaling, StandardScaling, OneHotLabels)


def train_validation_split(
    x: NDArray[Any], y: NDArray[Any], validation: float = 0.2, seed: int = 0
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    """(x_train, y_train, x_val, y_val): a shuffled split local executions use for evaluation."""
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(len(y) * (1 - validation))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
