"""The `keras` client: Keras 3 `.keras` files, and legacy `.h5`, loaded with `safe_mode=True` (a
Lambda layer's Python code is refused, not run). Keras runs on the torch backend when torch is
installed (so TensorFlow is not needed); the trained model is saved as `.keras`.

A model saved compiled keeps its own optimizer and loss unless the task sets them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flrepo.fl.frameworks.base import LocalModel, ModelError, Training, Weights

# Before keras is first imported: its backend is fixed then. Torch when present, unless chosen.
if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("torch") is not None:
    os.environ["KERAS_BACKEND"] = "torch"

import keras

log = logging.getLogger(__name__)
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
DEFAULT_LEARNING_RATE = {"sgd": 0.01, "adam": 0.001}


class KerasModel(LocalModel):
    library = "keras"
    suffix = ".keras"

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self._compiled_for: tuple[Any, ...] | None = None
        self._ours = False  # compiled by this client (not the model's own optimizer and loss)

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> KerasModel:
        # Keras picks the format by the file name's suffix: give it the one the content has.
        suffix = ".h5" if path.read_bytes()[:8] == HDF5_MAGIC else ".keras"
        with tempfile.TemporaryDirectory() as tmp:
            named = Path(tmp) / f"model{suffix}"
            shutil.copyfile(path, named)
            try:
                model = keras.saving.load_model(named, safe_mode=True)
            except Exception as exc:  # keras raises many kinds of errors for a file it cannot load
                raise ModelError(f"not a Keras model (.keras or .h5): {type(exc).__name__}: {str(exc)[:200]}") from None
        if not isinstance(model, keras.Model):
            raise ModelError(f"the file holds a {type(model).__name__}, not a Keras model")
        return cls(model)

    def get_weights(self) -> Weights:
        return [np.array(w) for w in self.model.get_weights()]

    def set_weights(self, weights: Weights) -> None:
        self.check_weights(weights)
        self.model.set_weights([np.asarray(w) for w in weights])

    def sample_shape(self) -> tuple[int, ...] | None:
        try:
            shape = tuple(self.model.input_shape)[1:]
        except (AttributeError, ValueError):  # several inputs, or not built
            return None
        return tuple(int(d) for d in shape) if all(isinstance(d, int) for d in shape) else None

    def _compile(self, training: Training, fresh: bool = False) -> None:
        """Compile for `training` unless the model keeps its own compilation (the task sets nothing);
        `fresh`: anew even if compiled so already (a new optimizer, without the last round's state)."""
        wanted = (training.optimizer, training.learning_rate, training.loss)
        if self._compiled_for == wanted and not (fresh and self._ours):
            return
        if self.model.compiled and wanted == (None, None, None) and self._compiled_for is None:
            self._compiled_for = wanted  # saved compiled: keep its own optimizer and loss
            return
        name = training.optimizer or "adam"
        lr = training.learning_rate or DEFAULT_LEARNING_RATE[name]
        optimizer = keras.optimizers.Adam(lr) if name == "adam" else keras.optimizers.SGD(lr)
        self.model.compile(optimizer=optimizer, loss=self._loss(training.loss), metrics=_metrics(training.loss))
        self._compiled_for, self._ours = wanted, True

    def _loss(self, loss: str | None) -> keras.losses.Loss:
        activation = getattr(getattr(self.model.layers[-1], "activation", None), "__name__", "linear")
        if loss in (None, "cross_entropy"):
            return keras.losses.SparseCategoricalCrossentropy(from_logits=activation != "softmax")
        if loss == "binary_cross_entropy":
            return keras.losses.BinaryCrossentropy(from_logits=activation != "sigmoid")
        return keras.losses.MeanSquaredError()

    def fit(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> dict[str, float]:
        # Every round with a new optimizer, as the PyTorch client trains and as a Message-API site does
        # (it loads the model for each message): Adam's moments carried from the last round in a
        # long-lived legacy site made the same task train differently on the two runtimes.
        self._compile(training, fresh=True)
        if training.proximal_mu:
            log.warning(
                "the keras client does not apply FedProx's proximal term (proximal_mu=%s)", training.proximal_mu
            )
        keras.utils.set_random_seed(training.seed)
        try:
            self.model.fit(_inputs(x), y, epochs=training.epochs, batch_size=training.batch_size, verbose=0)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"keras could not train on this data: {str(exc)[:300]}") from None
        loss, metrics = self.evaluate(x, y, training)
        return {"train_loss": loss, **{f"train_{k}": v for k, v in metrics.items()}}

    def evaluate(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> tuple[float, dict[str, float]]:
        self._compile(training)
        try:
            result = self.model.evaluate(_inputs(x), y, verbose=0, return_dict=True)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"keras could not evaluate on this data: {str(exc)[:300]}") from None
        metrics = {k: float(v) for k, v in result.items() if k != "loss" and isinstance(v, int | float | np.floating)}
        if "compile_metrics" in metrics:  # a model compiled with its own metric list reports them under this name
            metrics["accuracy"] = metrics.pop("compile_metrics")
        return float(result["loss"]), metrics

    def save(self, path: Path) -> None:
        # Keras insists on the .keras suffix; write there, then move to the name asked for.
        with tempfile.TemporaryDirectory() as tmp:
            named = Path(tmp) / "model.keras"
            self.model.save(named)
            shutil.move(named, path)


def _inputs(x: NDArray[Any]) -> NDArray[np.float32]:
    return np.asarray(x, dtype=np.float32)


def _metrics(loss: str | None) -> list[Any]:
    if loss in (None, "cross_entropy"):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if loss == "binary_cross_entropy":
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    return []
