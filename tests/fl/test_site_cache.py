"""A ClientApp process loads its site once: flrepo's ClientApp worker answers every message of a
task in one process, so a message does not read the model from its file again; a site written anew
(another task on the same SuperNode's directory) is loaded anew."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("flwr")

from flrepo.fl.core.trainer import SiteTrainer
from flrepo.fl.examples.data import partition
from flrepo.fl.examples.digits_models import write_initial
from flrepo.fl.frameworks import Training, open_model
from flrepo.fl.message.client import SITE_KEY, load_site, save_site

META = {"library": "numpy", "features": 64, "classes": 10}


def a_site(tmp_path, seed: int) -> SiteTrainer:
    model = open_model("numpy", write_initial("numpy", tmp_path / f"initial-{seed}.npz", seed=seed), META)
    x, y = partition(0, 3)
    return SiteTrainer.split(model, x[:100] / 16.0, y[:100], Training.from_config({"epochs": 1}), seed)


def test_a_process_loads_its_site_once_and_again_when_the_site_is_written_anew(tmp_path):
    directory = save_site(a_site(tmp_path, 1), tmp_path / "site", META)
    config = {SITE_KEY: str(directory)}
    first = load_site(config)
    assert load_site(config) is first  # the second message of the task: no second load

    replaced = a_site(tmp_path, 2)
    save_site(replaced, directory, META)
    stat = (directory / "site.json").stat()  # a rewrite within the clock's step still counts
    os.utime(directory / "site.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    again = load_site(config)
    assert again is not first
    assert again.seed == 2
    for got, want in zip(again.weights(), replaced.weights(), strict=True):
        np.testing.assert_array_equal(got, want)
