"""A site's round trains from the weights and the settings it is given, nothing else: a long-lived
site (the legacy runtime's, one process for the whole task) trains a round exactly as a site that has
just loaded the model (a Message-API ClientApp forked while the worker is busy). The Keras client kept Adam's
state from the last round in the first case, so the same task trained differently on the two runtimes
(1.4 points of held-out accuracy apart at 10 rounds, bench/RESULTS.md)."""

from __future__ import annotations

import numpy as np
import pytest

from flrepo.fl.examples.data import partition
from flrepo.fl.examples.digits_models import write_initial
from flrepo.fl.frameworks import Training, open_model

META = {"features": 64, "classes": 10}


@pytest.mark.parametrize("framework", ["pytorch", "keras"])
def test_a_round_on_a_long_lived_site_trains_as_on_a_site_just_loaded(framework, tmp_path):
    x, y = partition(0, 3)
    x, y = x[:200] / 16.0, y[:200]
    initial = write_initial(framework, tmp_path / f"initial.{framework}", hidden=16)
    settings = {"epochs": 1, "batch_size": 32, "learning_rate": 0.01, "optimizer": "adam"}
    long_lived = open_model(framework, initial, META)
    long_lived.fit(x, y, Training.from_config({**settings, "seed": 1}))  # round 1
    global_weights = [w * 0.5 for w in long_lived.get_weights()]  # what the collector sends for round 2
    long_lived.set_weights(global_weights)
    long_lived.fit(x, y, Training.from_config({**settings, "seed": 2}))
    just_loaded = open_model(framework, initial, META)
    just_loaded.set_weights(global_weights)
    just_loaded.fit(x, y, Training.from_config({**settings, "seed": 2}))
    for kept, fresh, before in zip(long_lived.get_weights(), just_loaded.get_weights(), global_weights, strict=True):
        assert not np.array_equal(kept, before)  # round 2 trained
        np.testing.assert_array_equal(kept, fresh)


def test_a_keras_model_saved_with_its_own_optimizer_keeps_it(tmp_path):
    """A task that sets no optimizer trains with the one the model was saved with (not a new one)."""
    from flrepo.fl.frameworks.keras_model import keras

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    path = tmp_path / "compiled.keras"
    model.save(path)
    loaded = open_model("keras", path, META)
    x, y = partition(0, 3)
    for seed in (1, 2):
        loaded.fit(x[:64] / 16.0, y[:64], Training.from_config({"epochs": 1, "batch_size": 32, "seed": seed}))
    assert isinstance(loaded.model.optimizer, keras.optimizers.SGD)  # type: ignore[attr-defined]
    assert float(loaded.model.optimizer.learning_rate) == pytest.approx(0.05)  # type: ignore[attr-defined]
