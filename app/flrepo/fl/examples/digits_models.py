"""Initial models for the digits data (64 features, 10 classes) in every framework, for the demo,
the tests and the benchmarks: what a user would upload, made the way a user would make it.

- numpy: softmax regression weights (.npz)
- pytorch: a 64-32-10 MLP, `torch.export`ed with a dynamic batch dimension (.pt2)
- keras: the same MLP as a Keras 3 model, saved uncompiled (.keras, or legacy .h5)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FEATURES, CLASSES, HIDDEN = 64, 10, 32
SUFFIX = {"numpy": ".npz", "pytorch": ".pt2", "keras": ".keras", "keras-h5": ".h5"}
# Training settings that fit each: plain SGD for the linear model, Adam for the MLPs.
TRAINING: dict[str, dict[str, Any]] = {
    "numpy": {"epochs": 2, "batch_size": 32, "learning_rate": 0.5},
    "pytorch": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01, "optimizer": "adam"},
    "keras": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01, "optimizer": "adam"},
}


def write_initial(framework: str, path: Path, seed: int = 0, hidden: int = HIDDEN) -> Path:
    """Write the initial model of `framework` (numpy, pytorch, keras or keras-h5) to `path`; the MLPs
    with `hidden` units in their hidden layer."""
    if framework == "numpy":
        from flrepo.fl.frameworks.numpy_model import NumpyModel

        NumpyModel.initial(FEATURES, CLASSES, seed).save(path)
    elif framework == "pytorch":
        _torch_mlp(path, seed, hidden)
    elif framework in ("keras", "keras-h5"):
        _keras_mlp(path, seed, hidden, h5=framework == "keras-h5")
    else:
        raise ValueError(f"unknown framework {framework!r}; use numpy, pytorch, keras or keras-h5")
    return path


def _torch_mlp(path: Path, seed: int, hidden: int) -> None:
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, CLASSES))
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.zeros(2, FEATURES),), dynamic_shapes=({0: batch},))
    with path.open("wb") as f:
        torch.export.save(program, f)


def _keras_mlp(path: Path, seed: int, hidden: int, h5: bool) -> None:
    import tempfile

    # Through the keras client: it chooses the torch backend before keras first loads.
    from flrepo.fl.frameworks.keras_model import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:  # keras picks the format from the suffix
        named = Path(tmp) / ("model.h5" if h5 else "model.keras")
        model.save(named)
        path.write_bytes(named.read_bytes())
