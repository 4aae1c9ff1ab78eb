"""Model weights as NumPy arrays in an .npz file: no pickle, loadable anywhere NumPy runs."""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray

Weights = list[NDArray[np.floating]]


def to_npz(weights: Weights) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, *weights)
    return buffer.getvalue()


def from_npz(data: bytes) -> Weights:
    # allow_pickle=False: an .npz from the repository can hold arrays, never code.
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]
