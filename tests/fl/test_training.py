"""Federated training end to end with real processes: the collector, local executions reading
their own files, each framework's model trained and published in its native format."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from flrepo.client import calls
from flrepo.fl.demo import digits_task, held_out_accuracy, register_model, write_partitions
from flrepo.fl.examples.data import held_out, partition
from flrepo.fl.weights import from_npz
from tests.helpers import last_condition, logs_of, run_training

# Loads the published file with nothing but the framework: no flrepo, no uploader code.
FRESH_PROCESS = {
    "pytorch": """
import sys, numpy as np, torch
data = np.load(sys.argv[2])
module = torch.export.load(sys.argv[1]).module()
with torch.no_grad():
    predicted = module(torch.as_tensor(data["x"], dtype=torch.float32)).argmax(dim=1).numpy()
assert not any(name.startswith("flrepo") for name in sys.modules)
print(float((predicted == data["y"]).mean()))
""",
    "keras": """
import os, sys, numpy as np
os.environ["KERAS_BACKEND"] = "torch"
import keras
data = np.load(sys.argv[2])
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
predicted = model.predict(data["x"].astype("float32"), verbose=0).argmax(axis=1)
assert not any(name.startswith("flrepo") for name in sys.modules)
print(float((predicted == data["y"]).mean()))
""",
}


def fresh_process_accuracy(framework, model_file, tmp_path):
    _, _, x_test, y_test = held_out()
    np.savez(tmp_path / "test.npz", x=x_test / 16.0, y=y_test)
    suffix = {"pytorch": ".pt2", "keras": ".keras"}[framework]
    named = model_file.with_suffix(suffix)
    named.write_bytes(model_file.read_bytes())
    run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS[framework], str(named), str(tmp_path / "test.npz")],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(run.stdout.strip().splitlines()[-1])


def _npz_partitions(directory, clients):
    files = []
    for k in range(clients):
        x, y = partition(k, clients)
        np.savez(directory / f"site-{k + 1}.npz", x=x, y=y)
        files.append(str(directory / f"site-{k + 1}.npz"))
    return files


@pytest.mark.parametrize(
    ("framework", "data_format"), [("pytorch", "csv"), ("keras", "npz")], ids=["pytorch-csv", "keras-npz"]
)
def test_a_users_model_trained_on_their_own_files_comes_back_in_its_format(fl, tmp_path, framework, data_format):
    initial_file = register_model(fl.repo, "digits", "v1", framework, tmp_path)
    data = write_partitions(tmp_path, 2) if data_format == "csv" else _npz_partitions(tmp_path, 2)
    fl.repo.create_task(digits_task("t1", "fedavg", rounds=2, clients=2, framework=framework))
    task, code = run_training(fl, "t1", data)
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)

    assert task["result"]["output_model_version"] == "v1-t1" and [h["round"] for h in task["history"]] == [1, 2]
    published = fl.repo.get_model("digits", "v1-t1")
    assert published.meta["library"] == framework and published.meta["task_id"] == "t1"
    trained = tmp_path / "trained.bin"
    fl.repo.download_model("digits", "v1-t1", trained)
    initial = held_out_accuracy(framework, initial_file)
    final = fresh_process_accuracy(framework, trained, tmp_path)
    # Measured: initial ~0.04-0.09; after two rounds of two local epochs ~0.85-0.92.
    assert final > 0.7 and final > initial + 0.5, (initial, final)
    # The aerOS training result is still written, with .npz weights, and names the model version.
    result = fl.repo.get_training_result("digits", "v1", "t1")
    assert result.results["output_model_version"] == "v1-t1" and result.results["rounds"] == 2
    weights = from_npz(fl.repo.read(calls.weights_download("digits", "v1", "t1")))
    shapes = {"pytorch": [(32, 64), (32,), (10, 32), (10,)], "keras": [(64, 32), (32,), (32, 10), (10,)]}
    assert [w.shape for w in weights] == shapes[framework]  # the framework's own order and layout


def test_a_legacy_h5_keras_model_trains(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "keras-h5", tmp_path)
    fl.repo.create_task(digits_task("t-h5", "fedavg", rounds=1, clients=1, framework="keras"))
    task, code = run_training(fl, "t-h5", write_partitions(tmp_path, 1))
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    trained = tmp_path / "trained.bin"
    fl.repo.download_model("digits", task["result"]["output_model_version"], trained)
    assert trained.read_bytes()[:2] == b"PK"  # published as a .keras archive


def _flower_lines_once(logs):
    """Flower's log lines appear once, through flrepo's handler (its own console handler, which
    also printed each, is gone), in the legacy collector's log and in its local executions'."""
    collector = (logs / "collector.log").read_text(errors="replace")
    assert collector.count("[ROUND 1]") == 1, collector[-3000:]
    for site in sorted(logs.glob("local-exec-*.log")):
        replies = [line for line in site.read_text(errors="replace").splitlines() if "Sent reply" in line]
        assert replies and all(line.startswith("20") for line in replies), replies  # flrepo's format: time first


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedmedian"])
def test_numpy_training_with_catalogue_strategies(fl, tmp_path, strategy):
    initial_file = register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    fl.repo.create_task(digits_task(f"t-{strategy}", strategy, rounds=2, clients=2))
    task, code = run_training(fl, f"t-{strategy}", ["digits:1/2", "digits:2/2"])
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    assert [c["type"] for c in task["conditions"]] == ["Training", "Completed"]
    assert all(h["participants"] == 2 and h["failures"] == 0 for h in task["history"])
    # Each local execution trains on 80 % of its partition; the task records those sample counts.
    expected = sorted(int(len(partition(k, 2)[1]) * 0.8) for k in range(2))
    assert sorted(p["samples"] for p in task["participants"]) == expected
    settings = task["strategy_settings"]
    assert settings["min_available_clients"] == {"value": 2, "source": "task min_participants"}
    _flower_lines_once(fl.logs)
    assert settings["initial_parameters"]["source"] == "model file"
    trained = tmp_path / "trained.npz"
    fl.repo.download_model("digits", "v1-" + task["task_id"], trained)
    initial, final = held_out_accuracy("numpy", initial_file), held_out_accuracy("numpy", trained)
    assert final > 0.75 and final > initial + 0.5, (initial, final)


def test_the_task_fails_at_once_when_a_site_cannot_use_its_data(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    # "At once": long before the participants timeout, which is set far beyond the generous bound below.
    fl.repo.create_task(digits_task("t-bad", rounds=2, clients=2, participants_timeout=3600))
    bad = tmp_path / "bad.csv"
    bad.write_text("f0,f1,target\n1,2,0\n")
    task, code = run_training(fl, "t-bad", [write_partitions(tmp_path, 1)[0], str(bad)], timeout=600)
    assert task["phase"] == "Failed" and code == 1, logs_of(fl.logs)
    reason, message = last_condition(task)
    assert reason == "DataError" and "no label column 'label'" in message and "bad.csv" in message
    assert list(fl.repo.list_training_results()) == [] and fl.repo.list_models().total == 1
    json.dumps(task)  # the status stays plain JSON
