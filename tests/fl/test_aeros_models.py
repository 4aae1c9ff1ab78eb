"""aerOS's own model files train on flrepo's runtime and come back in their format: a PyTorch model as
aerOS's local operations store it (a ZIP holding a TorchScript `scripted_model.pt`, loaded with
`torch.jit.load` after extracting, `application/src/builders/pytorch_builder.py`)."""

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

torch = pytest.importorskip("torch")


def write_aeros_torchscript(path: Path, seed: int = 0, folder: str = "") -> Path:
    """The digits MLP as an aerOS user stores it: `torch.jit.script`, `torch.jit.save`, zipped."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES))
    scripted = path.with_suffix(".pt")
    torch.jit.save(torch.jit.script(model), str(scripted))
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(scripted, folder + "scripted_model.pt")
    return path


# aerOS's local operations' way of loading the model, in a process without flrepo.
AEROS_LOAD = """
import sys, zipfile, numpy as np, torch
zipfile.ZipFile(sys.argv[1]).extractall("temp")
model = torch.jit.load("temp/scripted_model.pt")
data = np.load(sys.argv[2])
with torch.no_grad():
    predicted = model(torch.as_tensor(data["x"], dtype=torch.float32)).argmax(dim=1).numpy()
assert not any(name.startswith("flrepo") for name in sys.modules)
print(float((predicted == data["y"]).mean()))
"""


def aeros_accuracy(model_zip: Path, tmp_path: Path) -> float:
    return held_out_accuracy(AEROS_LOAD, model_zip, tmp_path)


@pytest.mark.parametrize("folder", ["", "model/"], ids=["top", "in-a-folder"])
def test_a_torchscript_archive_loads_trains_and_saves_in_its_format(tmp_path, folder):
    x, y, x_test, y_test = held_out()
    model_zip = write_aeros_torchscript(tmp_path / "model.zip", folder=folder)
    assert file_format(model_zip) == "torchscript"
    model = open_model("pytorch", model_zip)
    training = Training(epochs=3, batch_size=32, learning_rate=0.01, optimizer="adam")
    before, _ = model.evaluate(x_test / 16.0, y_test, training)
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(32, 64), (32,), (10, 32), (10,)]
    model.fit(x / 16.0, y, training)
    after, metrics = model.evaluate(x_test / 16.0, y_test, training)
    assert after < before * 0.7 and metrics["accuracy"] > 0.7, (before, after, metrics)
    trained = model.get_weights()
    model.set_weights(weights)
    assert model.evaluate(x_test / 16.0, y_test, training)[0] == pytest.approx(before, rel=1e-4)
    model.set_weights(trained)
    saved = tmp_path / "trained.zip"
    model.save(saved)
    assert zipfile.ZipFile(saved).namelist() == ["scripted_model.pt"] and file_format(saved) == "torchscript"
    again = open_model("pytorch", saved)
    assert all(np.allclose(a, b) for a, b in zip(again.get_weights(), trained, strict=True))
    assert aeros_accuracy(saved, tmp_path) == pytest.approx(metrics["accuracy"])


def test_an_archive_without_a_model_is_refused_by_name(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "no model here")
    with pytest.raises(ModelError, match="ZIP archive of unknown content"):
        open_model("pytorch", tmp_path / "other.zip")
    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as archive:
        archive.writestr("scripted_model.pt", b"not torchscript")
    with pytest.raises(ModelError, match="not an aerOS TorchScript archive"):
        open_model("pytorch", tmp_path / "broken.zip")
    with pytest.raises(ModelError, match=r"keras.*TorchScript archive"):
        open_model("keras", write_aeros_torchscript(tmp_path / "m.zip"))


def test_an_aeros_torchscript_model_trains_in_a_task_and_comes_back_as_one(fl, tmp_path):
    initial = write_aeros_torchscript(tmp_path / "migration_predictor_v1.zip")
    fl.repo.create_model("digits", "v1", "pytorch", description="aerOS TorchScript MLP", features=64, classes=10)
    fl.repo.upload_model("digits", "v1", initial, filename=initial.name)
    fl.repo.create_task(digits_task("t1", "fedavg", rounds=2, clients=2, framework="pytorch"))
    task, code = run_training(fl, "t1", write_partitions(tmp_path, 2))
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    published = fl.repo.get_model("digits", task["result"]["output_model_version"])
    assert published.filename.endswith(".zip")
    trained = tmp_path / "trained.zip"
    fl.repo.download_model("digits", published.model_version, trained)
    assert file_format(trained) == "torchscript"
    # Measured: initial ~0.1; after two rounds of two local epochs ~0.85-0.92.
    assert aeros_accuracy(initial, tmp_path) < 0.3 < 0.7 < aeros_accuracy(trained, tmp_path)
