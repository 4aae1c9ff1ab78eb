"""Demo and test data: scikit-learn's bundled digits set (nothing is downloaded), split non-IID.

The split rule: a fixed 20 % of the samples (seed 0, stratified) is the held-out test set. The
rest is dealt to `clients` parts so that part k gets 70 % of its samples from the labels
{k, k + clients, k + 2*clients, ...} and 30 % drawn from all labels: each client sees every digit,
but most of its data comes from a few of them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

Array = NDArray[np.float64]


def digits() -> tuple[Array, NDArray[np.int64]]:
    data = load_digits()
    return data.data.astype(np.float64), data.target.astype(np.int64)


def held_out() -> tuple[Array, NDArray[np.int64], Array, NDArray[np.int64]]:
    """(x_train, y_train, x_test, y_test) with the fixed 80/20 split."""
    x, y = digits()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return x_train, y_train, x_test, y_test


def partition(index: int, clients: int, seed: int = 0) -> tuple[Array, NDArray[np.int64]]:
    """The training samples of client `index` (0-based) out of `clients`."""
    if not 0 <= index < clients:
        raise ValueError(f"partition {index} does not exist among {clients}")
    x, y, _, _ = held_out()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    preferred = order[(y[order] % clients) == index]
    others = order[(y[order] % clients) != index]
    # Share the "other" samples evenly so every part has some of every label.
    share = others[index::clients]
    n_other = min(len(share), int(len(preferred) * 0.3 / 0.7))
    chosen = np.concatenate([preferred, share[:n_other]])
    return x[chosen], y[chosen]


def parse_partition(spec: str) -> tuple[int, int]:
    """'digits:1/3' -> (0, 3): the first of three parts (1-based in the spec, as people count)."""
    try:
        name, part = spec.split(":", 1)
        k, n = (int(v) for v in part.split("/", 1))
    except ValueError:
        raise ValueError(f"expected digits:K/N (e.g. digits:1/3), got {spec!r}") from None
    if name != "digits" or not 1 <= k <= n:
        raise ValueError(f"expected digits:K/N with 1 <= K <= N, got {spec!r}")
    return k - 1, n
