"""The framework clients on their own: loading self-contained files only, weights in a stable order,
training that learns, saving in the native format, and refusals that name the problem."""

from __future__ import annotations

import numpy as np
import pytest

from flrepo.fl.examples.data import held_out
from flrepo.fl.examples.digits_models import write_initial
from flrepo.fl.frameworks import ModelError, Training, file_format, library_name, open_model

FRAMEWORKS = ["numpy", "pytorch", "keras", "keras-h5"]


@pytest.fixture(scope="module")
def digits():
    x, y, x_test, y_test = held_out()
    return x / 16.0, y, x_test / 16.0, y_test


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_load_train_save_and_load_again(framework, digits, tmp_path):
    x, y, x_test, y_test = digits
    library = framework.removesuffix("-h5")
    model = open_model(library, write_initial(framework, tmp_path / "initial"))
    training = Training(epochs=3, batch_size=32, learning_rate=0.5 if library == "numpy" else 0.01)
    model.check_data(x)
    loss_before, _ = model.evaluate(x_test, y_test, training)
    weights = model.get_weights()
    metrics = model.fit(x, y, training)
    loss_after, after = model.evaluate(x_test, y_test, training)
    assert loss_after < loss_before * 0.7 and after["accuracy"] > 0.7, (loss_before, loss_after, after)
    assert 0 <= metrics["train_accuracy"] <= 1 and metrics["train_loss"] > 0
    # The same arrays, in the same order, every time; setting them back restores the model.
    trained = model.get_weights()
    assert [w.shape for w in trained] == [w.shape for w in model.get_weights()]
    model.set_weights(weights)
    assert model.evaluate(x_test, y_test, training)[0] == pytest.approx(loss_before, rel=1e-4)
    model.set_weights(trained)
    saved = tmp_path / "trained"
    model.save(saved)
    assert file_format(saved) == {"numpy": "npz", "pytorch": "pt2", "keras": "keras"}[library]
    again = open_model(library, saved)
    assert all(np.allclose(a, b) for a, b in zip(again.get_weights(), trained, strict=True))


def test_library_names_and_aliases():
    assert [library_name(n) for n in ("numpy", "PyTorch", "torch", "keras", "tensorflow", "tf.keras")] == [
        "numpy",
        "pytorch",
        "pytorch",
        "keras",
        "keras",
        "keras",
    ]
    with pytest.raises(ModelError, match="no local client for library 'xgboost'"):
        library_name("xgboost")
    with pytest.raises(ModelError, match="no local client for library None"):
        library_name(None)


def test_weights_of_other_shapes_are_refused(tmp_path):
    model = open_model("pytorch", write_initial("pytorch", tmp_path / "m"))
    with pytest.raises(ModelError, match="do not fit this pytorch model"):
        model.set_weights([np.zeros((3, 3))])


def test_a_lambda_layer_is_refused_not_run(tmp_path):
    from flrepo.fl.frameworks.keras_model import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda v: v * 2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelError, match="not a Keras model"):
        open_model("keras", path)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"loss": "hinge"}, "unknown loss 'hinge'"),
        ({"epochs": 0}, "epochs and batch_size must be at least 1"),
        ({"batch_size": "many"}, "invalid training settings"),
    ],
)
def test_settings_no_client_knows_are_refused(config, message):
    with pytest.raises(ModelError, match=message):
        Training.from_config(config)


def test_binary_and_regression_losses_train_a_torch_model(tmp_path):
    import torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    program = torch.export.export(
        torch.nn.Linear(4, 1), (torch.zeros(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    with (tmp_path / "linear.pt2").open("wb") as f:
        torch.export.save(program, f)
    for loss, y in (("binary_cross_entropy", (x[:, 0] > 0).astype(np.int64)), ("mse", x @ np.array([1, -2, 0.5, 0]))):
        model = open_model("pytorch", tmp_path / "linear.pt2")
        training = Training(epochs=30, batch_size=32, learning_rate=0.05, loss=loss)
        before, _ = model.evaluate(x, y, training)
        model.fit(x, y, training)
        after, metrics = model.evaluate(x, y, training)
        assert after < before / 2, (loss, before, after)
        assert ("accuracy" in metrics) == (loss == "binary_cross_entropy")
