"""Every model or setting a task cannot train with fails it at once, with a reason naming the
problem, before any round runs (the collector alone is enough to find out)."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from flrepo.fl.demo import digits_task
from flrepo.fl.examples.digits_models import write_initial
from tests.helpers import last_condition, logs_of


def _collector_alone(fl, task_id, timeout=300):
    command = [sys.executable, "-m", "flrepo.cli", "collector", "--task", task_id, "--repo", fl.url]
    command += ["--address", "127.0.0.1:0"]
    done = subprocess.run(command, env=fl.env, capture_output=True, text=True, timeout=timeout)
    return fl.repo.get_task(task_id).model_dump(mode="json"), done.returncode, done.stdout + done.stderr


def _model(fl, tmp_path, library, framework=None, **meta):
    fl.repo.create_model("digits", "v1", library, **meta)
    if framework:
        path = write_initial(framework, tmp_path / "model.bin")
        fl.repo.upload_model("digits", "v1", path)


@pytest.mark.parametrize(
    ("library", "framework", "training", "reason_text"),
    [
        ("sklearn", "numpy", None, "no local client for library 'sklearn'"),
        ("pytorch", "keras", None, "library is 'pytorch' but its file is a Keras .keras file"),
        ("keras", "pytorch", None, "library is 'keras' but its file is a torch.export program (.pt2)"),
        ("numpy", "pytorch", None, "library is 'numpy' but its file is a torch.export program"),
        ("numpy", "numpy", {"loss": "mse"}, "loss must be cross_entropy, not mse"),
        ("pytorch", None, None, "has no file yet"),
    ],
    ids=["no-client", "pytorch-given-keras", "keras-given-pt2", "numpy-given-pt2", "unsupported-loss", "no-file"],
)
def test_a_model_the_task_cannot_train_fails_it_with_the_reason(
    fl, tmp_path, library, framework, training, reason_text
):
    _model(fl, tmp_path, library, framework, features=64, classes=10)
    plan = digits_task("t", rounds=2, clients=2)
    if training:
        plan["training"] = {**plan["training"], **training}
    fl.repo.create_task(plan)
    task, code, output = _collector_alone(fl, "t")
    assert code == 1 and task["phase"] == "Failed", output
    reason, message = last_condition(task)
    assert reason == "ModelError" and reason_text in message, message
    assert task["current_round"] == 0 and task["history"] == []


def test_a_pickle_posing_as_a_model_is_never_loaded(fl, tmp_path):
    fl.repo.create_model("digits", "v1", "pytorch")
    payload = b'\x80\x04cbuiltins\nexec\n(S\'open("/tmp/owned","w")\'\ntR.'
    fl.repo.upload_model("digits", "v1", io.BytesIO(payload), filename="model.pt")
    fl.repo.create_task(digits_task("t", rounds=1, clients=1))
    task, code, _ = _collector_alone(fl, "t")
    assert code == 1 and "a Python pickle (never loaded" in last_condition(task)[1]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("f0,f1,target\n1,2,0\n", "no label column 'label'"),
        ("f0,label\nred,1\n2,0\n", "column 'f0' is not numeric"),
        ("", "the file is empty"),
        ("f0,label\n", "no data rows"),
        ("f0,f1,label\n1,2,0\n3,4,1\n", "the data has 2 features per sample, the model expects 64"),
    ],
    ids=["missing-label", "non-numeric", "empty", "header-only", "feature-count"],
)
def test_data_a_site_cannot_use_fails_the_task_with_the_reason(fl, tmp_path, content, expected):
    _model(fl, tmp_path, "numpy", "numpy")
    fl.repo.create_task(digits_task("t", rounds=1, clients=1))
    data = tmp_path / "site.csv"
    data.write_text(content)
    command = [sys.executable, "-m", "flrepo.cli", "local-exec", "--task", "t", "--repo", fl.url]
    command += ["--server", "127.0.0.1:9", "--data", str(data)]
    done = subprocess.run(command, env=fl.env, capture_output=True, text=True, timeout=300)
    task = fl.repo.get_task("t").model_dump(mode="json")
    assert done.returncode != 0 and task["phase"] == "Failed", done.stderr + logs_of(fl.logs)
    reason, message = last_condition(task)
    assert reason in ("DataError", "ModelError") and expected in message, message
    assert expected in done.stderr


def test_a_stored_task_with_a_setting_no_client_knows_fails_at_once(fl, tmp_path, raw_db):
    """The API refuses unknown training keys (422); a task stored before that rule is refused by the collector."""
    _model(fl, tmp_path, "numpy", "numpy")
    fl.repo.create_task(digits_task("t", rounds=1, clients=1))
    raw_db[0]["tasks"].update_one({"task_id": "t"}, {"$set": {"training.momentum": 0.9}})
    task, code, output = _collector_alone(fl, "t")
    assert code == 1 and task["phase"] == "Failed", output
    assert last_condition(task) == ("ModelError", "unknown training setting: momentum")
