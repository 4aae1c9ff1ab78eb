"""aerOS's Keras model files train on flrepo's runtime with the `tensorflow` extra (TensorFlow and
tf-keras): a ZIP of a TensorFlow SavedModel, as aerOS's local operations store it and load it
(`keras.models.load_model(folder)` after extracting, `application/src/builders/keras_builder.py`).
Skipped where the extra is not installed (`pip install 'flrepo[tensorflow]'`)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from flrepo.fl.demo import digits_task, write_partitions
from flrepo.fl.examples.data import held_out
from flrepo.fl.examples.digits_models import CLASSES, FEATURES, HIDDEN
from flrepo.fl.frameworks import ModelError, Training, file_format, open_model
from tests.helpers import held_out_accuracy, logs_of, run_training

tf_keras = pytest.importorskip("tf_keras", reason="the tensorflow extra is not installed")


def write_aeros_savedmodel(path: Path, folder: str = "model/") -> Path:
    """The digits MLP as an aerOS user stores it: Keras 2 `model.save(folder)` (a SavedModel), zipped."""
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((FEATURES,)),
            tf_keras.layers.Dense(HIDDEN, activation="relu"),
            tf_keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    saved = path.with_suffix("")
    model.save(saved, save_format="tf")
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(saved.rglob("*")):
            archive.write(file, folder + file.relative_to(saved).as_posix())
    return path


# aerOS's local operations' way of loading it (check_loading_path: down the one folder), without flrepo.
AEROS_LOAD = """
import os, sys, zipfile, numpy as np
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tf_keras as keras
zipfile.ZipFile(sys.argv[1]).extractall("temp")
path = "temp"
while len(os.listdir(path)) == 1 and os.path.isdir(os.path.join(path, os.listdir(path)[0])):
    path = os.path.join(path, os.listdir(path)[0])
model = keras.models.load_model(path)
data = np.load(sys.argv[2])
predicted = model.predict(data["x"].astype("float32"), verbose=0).argmax(axis=1)
assert not any(name.startswith("flrepo") for name in sys.modules)
print(float((predicted == data["y"]).mean()))
"""


def aeros_accuracy(model_zip: Path, workdir: Path) -> float:
    return held_out_accuracy(AEROS_LOAD, model_zip, workdir)


def test_a_savedmodel_archive_loads_trains_and_saves_in_its_format(tmp_path):
    x, y, x_test, y_test = held_out()
    model_zip = write_aeros_savedmodel(tmp_path / "model.zip")
    assert file_format(model_zip) == "savedmodel"
    model = open_model("keras", model_zip)
    training = Training(epochs=3, batch_size=32, learning_rate=0.01, optimizer="adam")
    before, _ = model.evaluate(x_test / 16.0, y_test, training)
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(64, 32), (32,), (32, 10), (10,)]
    model.fit(x / 16.0, y, training)
    after, metrics = model.evaluate(x_test / 16.0, y_test, training)
    assert after < before * 0.7 and metrics["accuracy"] > 0.7, (before, after, metrics)
    saved = tmp_path / "trained.zip"
    model.save(saved)
    assert file_format(saved) == "savedmodel"
    again = open_model("keras", saved)
    assert all(np.allclose(a, b) for a, b in zip(again.get_weights(), model.get_weights(), strict=True))
    (tmp_path / "aeros").mkdir()
    assert aeros_accuracy(saved, tmp_path / "aeros") == pytest.approx(metrics["accuracy"], abs=0.01)


def test_an_archive_escaping_its_folder_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("saved_model.pb", b"x")
        archive.writestr("../outside.txt", b"x")
    with pytest.raises(ModelError, match="outside"):
        open_model("keras", tmp_path / "evil.zip")
    assert not (tmp_path.parent / "outside.txt").exists()


def test_an_aeros_savedmodel_trains_in_a_task_and_comes_back_as_one(fl, tmp_path):
    initial = write_aeros_savedmodel(tmp_path / "keras_model.zip")
    fl.repo.create_model("digits", "v1", "keras", description="aerOS SavedModel MLP", features=64, classes=10)
    fl.repo.upload_model("digits", "v1", initial, filename=initial.name)
    fl.repo.create_task(digits_task("t1", "fedavg", rounds=2, clients=2, framework="keras"))
    task, code = run_training(fl, "t1", write_partitions(tmp_path, 2), timeout=600)
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    published = fl.repo.get_model("digits", task["result"]["output_model_version"])
    trained = tmp_path / "trained.zip"
    fl.repo.download_model("digits", published.model_version, trained)
    assert published.filename.endswith(".zip") and file_format(trained) == "savedmodel"
    (tmp_path / "aeros").mkdir()
    assert aeros_accuracy(trained, tmp_path / "aeros") > 0.7
