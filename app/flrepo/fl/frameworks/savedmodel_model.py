"""The `keras` client for aerOS's Keras model files: a ZIP archive of a TensorFlow SavedModel (Keras 2,
`model.save(folder)`), as aerOS's local operations load it (`keras.models.load_model(folder)` after
extracting, `application/src/builders/keras_builder.py`). Needs the `tensorflow` extra (TensorFlow and
`tf-keras`, the Keras 2 that reads SavedModels; Keras 3 cannot train one).

A SavedModel holds TensorFlow graphs and the Keras configuration of built-in layers: loading it runs
none of the uploader's Python. The model trains as the `.keras` client trains (the task's optimizer and
loss, or the model's own compilation), and the trained model is written back as a SavedModel archive.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flrepo.fl.frameworks.aeros_archives import saved_model_folder
from flrepo.fl.frameworks.base import LocalModel, ModelError, Training, Weights

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, before it loads
import tf_keras

DEFAULT_LEARNING_RATE = {"sgd": 0.01, "adam": 0.001}


class SavedModelModel(LocalModel):
    library = "keras"
    suffix = ".zip"

    def __init__(self, model: Any) -> None:
        self.model = model
        self._compiled_for: tuple[Any, ...] | None = None

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> SavedModelModel:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with zipfile.ZipFile(path) as archive:
                    folder = saved_model_folder(archive.namelist())
                    if folder is None:
                        raise ModelError("the ZIP archive holds no saved_model.pb")
                    _extract(archive, Path(tmp))
                model = tf_keras.models.load_model(Path(tmp) / folder)
            except ModelError:
                raise
            except Exception as exc:  # TensorFlow raises many kinds of errors for what it cannot load
                raise ModelError(f"not an aerOS SavedModel archive: {type(exc).__name__}: {str(exc)[:200]}") from None
        if not isinstance(model, tf_keras.Model):
            raise ModelError(f"the SavedModel holds a {type(model).__name__}, not a Keras model")
        return cls(model)

    def get_weights(self) -> Weights:
        return [np.array(w) for w in self.model.get_weights()]

    def set_weights(self, weights: Weights) -> None:
        self.check_weights(weights)
        self.model.set_weights([np.asarray(w) for w in weights])

    def sample_shape(self) -> tuple[int, ...] | None:
        try:
            shape = tuple(self.model.input_shape)[1:]
        except (AttributeError, ValueError):
            return None
        return tuple(int(d) for d in shape) if all(isinstance(d, int) for d in shape) else None

    def _compile(self, training: Training) -> None:
        wanted = (training.optimizer, training.learning_rate, training.loss)
        if self._compiled_for == wanted:
            return
        if self.model.optimizer is not None and wanted == (None, None, None) and self._compiled_for is None:
            self._compiled_for = wanted  # saved compiled: keep its own optimizer and loss
            return
        name = training.optimizer or "adam"
        lr = training.learning_rate or DEFAULT_LEARNING_RATE[name]
        optimizers = tf_keras.optimizers
        optimizer = optimizers.Adam(lr) if name == "adam" else optimizers.SGD(lr)
        self.model.compile(optimizer=optimizer, loss=self._loss(training.loss), metrics=_metrics(training.loss))
        self._compiled_for = wanted

    def _loss(self, loss: str | None) -> Any:
        activation = getattr(getattr(self.model.layers[-1], "activation", None), "__name__", "linear")
        if loss in (None, "cross_entropy"):
            return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=activation != "softmax")
        if loss == "binary_cross_entropy":
            return tf_keras.losses.BinaryCrossentropy(from_logits=activation != "sigmoid")
        return tf_keras.losses.MeanSquaredError()

    def fit(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> dict[str, float]:
        self._compile(training)
        tf_keras.utils.set_random_seed(training.seed)
        try:
            self.model.fit(_inputs(x), y, epochs=training.epochs, batch_size=training.batch_size, verbose=0)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"tf-keras could not train on this data: {str(exc)[:300]}") from None
        loss, metrics = self.evaluate(x, y, training)
        return {"train_loss": loss, **{f"train_{k}": v for k, v in metrics.items()}}

    def evaluate(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> tuple[float, dict[str, float]]:
        self._compile(training)
        try:
            result = self.model.evaluate(_inputs(x), y, verbose=0, return_dict=True)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"tf-keras could not evaluate on this data: {str(exc)[:300]}") from None
        metrics = {k: float(v) for k, v in result.items() if k != "loss"}
        return float(result["loss"]), metrics

    def save(self, path: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model"
            self.model.save(folder, save_format="tf")
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(folder.rglob("*")):
                    archive.write(file, file.relative_to(folder).as_posix())


def _extract(archive: zipfile.ZipFile, into: Path) -> None:
    """Extract, refusing members that would land outside `into` (absolute paths, `..`)."""
    root = into.resolve()
    for member in archive.infolist():
        target = (into / member.filename).resolve()
        if not target.is_relative_to(root):
            raise ModelError(f"the archive's member {member.filename!r} points outside it")
        if member.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink)


def _inputs(x: NDArray[Any]) -> NDArray[np.float32]:
    return np.asarray(x, dtype=np.float32)


def _metrics(loss: str | None) -> list[Any]:
    if loss in (None, "cross_entropy"):
        return [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if loss == "binary_cross_entropy":
        return [tf_keras.metrics.BinaryAccuracy(name="accuracy")]
    return []
