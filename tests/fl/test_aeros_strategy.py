"""aerOS's FedAvg, as aerOS stores it (pickled by flwr 1.3.0, unsigned), runs a task on flrepo's legacy
(gRPC) runtime once an administrator has adopted it, with the task's settings and no --allow-unsigned."""

from __future__ import annotations

import pickle
from pathlib import Path

from flrepo.client import adopt
from flrepo.fl.demo import digits_task, held_out_accuracy, register_model
from flrepo.fl.strategy_setup import complete_older_pickle
from tests.helpers import logs_of, run_training

# aerOS's own strategy file (its unit tests' data): FedAvg pickled by flwr 1.3.0, aerOS's pinned version.
AEROS_STRATEGY = (
    Path(__file__).resolve().parents[1] / "data" / "aeros" / "application" / "tests" / "data" / "strategy_test.pkl"
)


def test_the_pinned_flwr_needs_exactly_what_is_filled_in():
    """Fails loudly when the pinned flwr's FedAvg reads other attributes than flwr 1.3.0 pickled."""
    strategy = pickle.loads(AEROS_STRATEGY.read_bytes())
    assert complete_older_pickle(strategy) == ["inplace"]
    assert strategy.inplace is True and strategy.min_fit_clients == 2  # the default; the pickle's own kept
    assert complete_older_pickle(strategy) == []


def test_an_adopted_aeros_fedavg_runs_a_task_with_the_tasks_settings(fl, tmp_path):
    initial_file = register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    fl.repo.create_strategy("aeros-fedavg", "aerOS FedAvg (flwr 1.3.0)")
    fl.repo.upload_strategy("aeros-fedavg", AEROS_STRATEGY, sign=False)
    adopt.adopt(fl.repo, adopt.inspect(fl.repo, "strategy", "aeros-fedavg"))  # what `flrepo strategies adopt` does
    fl.repo.create_task(digits_task("t-aeros", "aeros-fedavg", rounds=2, clients=3, participants_ratio=1.0))
    task, code = run_training(fl, "t-aeros", ["digits:1/3", "digits:2/3", "digits:3/3"])
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    assert all(h["participants"] == 3 and h["failures"] == 0 for h in task["history"])
    settings = task["strategy_settings"]
    # The pickle says 2 clients; the task's 3 win.
    assert settings["min_available_clients"] == {"value": 3, "source": "task min_participants"}
    assert settings["min_fit_clients"] == {"value": 3, "source": "task min_participants"}
    trained = tmp_path / "trained.npz"
    fl.repo.download_model("digits", task["result"]["output_model_version"], trained)
    initial, final = held_out_accuracy("numpy", initial_file), held_out_accuracy("numpy", trained)
    assert final > 0.7 and final > initial + 0.4, (initial, final)
