"""A stored strategy keeps its own settings unless the task sets them, and the task's status says
which were used and where they came from."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAdam, FedAvg

from flrepo.fl.frameworks import ModelError
from flrepo.fl.frameworks.numpy_model import NumpyModel
from flrepo.fl.strategy_setup import configure, weighted_average

MODEL = NumpyModel.initial(4, 3)


def own_metrics(results):
    return {"custom": 1.0}


def _owned():
    weights = [np.full((4, 3), 0.5), np.ones(3)]
    strategy = FedAvg(
        min_fit_clients=1,
        min_evaluate_clients=1,
        min_available_clients=1,
        fraction_fit=0.5,
        initial_parameters=ndarrays_to_parameters(weights),
        fit_metrics_aggregation_fn=own_metrics,
    )
    return strategy, weights


def test_what_the_task_leaves_unset_stays_the_strategys():
    strategy, weights = _owned()
    used = configure(strategy, {"min_participants": None, "participants_ratio": None, "strategy_conf": {}}, MODEL, None)
    assert (strategy.min_available_clients, strategy.min_fit_clients, strategy.fraction_fit) == (1, 1, 0.5)
    assert strategy.fit_metrics_aggregation_fn is own_metrics
    assert strategy.evaluate_metrics_aggregation_fn is weighted_average  # it had none
    assert all(
        np.array_equal(a, b) for a, b in zip(parameters_to_ndarrays(strategy.initial_parameters), weights, strict=True)
    )
    assert used["min_available_clients"] == {"value": 1, "source": "strategy"}
    assert used["fraction_fit"] == {"value": 0.5, "source": "strategy"}
    assert used["initial_parameters"] == {"value": "2 arrays", "source": "strategy"}
    assert used["fit_metrics_aggregation_fn"] == {"value": "own_metrics", "source": "strategy"}
    assert used["evaluate_metrics_aggregation_fn"]["source"] == "flrepo weighted average"


def test_what_the_task_sets_explicitly_wins_and_is_recorded():
    strategy, _ = _owned()
    task = {"min_participants": 3, "participants_ratio": 0.5, "strategy_conf": {"accept_failures": False}}
    used = configure(strategy, task, MODEL, None)
    assert (strategy.min_available_clients, strategy.min_fit_clients, strategy.fraction_evaluate) == (3, 2, 0.5)
    assert used["min_available_clients"] == {"value": 3, "source": "task min_participants"}
    assert used["fraction_fit"] == {"value": 0.5, "source": "task participants_ratio"}
    assert used["accept_failures"] == {"value": False, "source": "task strategy_conf"}
    with pytest.raises(ValueError, match="has no parameter 'nope'"):
        configure(strategy, {"strategy_conf": {"nope": 1}}, MODEL, None)


def test_initial_weights_come_from_a_checkpoint_the_strategy_or_the_model():
    placeholder = FedAdam(initial_parameters=ndarrays_to_parameters([]))  # as the catalogue stores it
    used = configure(placeholder, {}, MODEL, None)
    assert used["initial_parameters"]["source"] == "model file"
    assert [w.shape for w in placeholder.current_weights] == [(4, 3), (3,)]  # FedOpt's own copy too
    checkpoint = [np.zeros((4, 3)), np.zeros(3)]
    strategy, _ = _owned()
    assert configure(strategy, {}, MODEL, checkpoint)["initial_parameters"]["source"] == "checkpoint"
    wrong = FedAvg(initial_parameters=ndarrays_to_parameters([np.zeros((5, 5))]))
    with pytest.raises(ModelError, match="do not fit this numpy model"):
        configure(wrong, {}, MODEL, None)
