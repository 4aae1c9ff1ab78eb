"""Applying a task to a stored strategy without overriding what the strategy itself says.

A pickled strategy arrives with its own minimums, fractions, initial parameters and metric
aggregation functions. Only what the task sets explicitly replaces them: `min_participants`,
`participants_ratio` and `strategy_conf`; the task's model supplies the initial parameters only
when the strategy has none of its own (the catalogue's FedOpt strategies carry an empty
placeholder); flrepo's weighted average aggregates metrics only where the strategy has no
function. `configure` returns what was used and where it came from, for the task's status.
"""

from __future__ import annotations

import math
from typing import Any

from flwr.common import Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import Strategy

from flrepo.fl.frameworks import LocalModel, Weights

METRIC_FUNCTIONS = ("fit_metrics_aggregation_fn", "evaluate_metrics_aggregation_fn")


def weighted_average(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """Every numeric metric, averaged with the participants' sample counts as weights."""
    total = sum(n for n, _ in results) or 1
    keys = {k for _, m in results for k, v in m.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {k: sum(n * float(m.get(k, 0.0)) for n, m in results) / total for k in sorted(keys)}


# The strategy attributes a task's participant settings set: (everyone needed, per round for
# training, per round for evaluation, fraction for training, fraction for evaluation).
LEGACY_NAMES = ("min_available_clients", "min_fit_clients", "min_evaluate_clients", "fraction_fit", "fraction_evaluate")
MESSAGE_NAMES = ("min_available_nodes", "min_train_nodes", "min_evaluate_nodes", "fraction_train", "fraction_evaluate")
# Recorded in the task's strategy_settings whatever their source (the strategy's own when the task sets none).
ALGORITHM_SETTINGS = ("proximal_mu", "server_learning_rate", "server_momentum", "eta", "tau")
REPORTED = (*LEGACY_NAMES, *ALGORITHM_SETTINGS)


class _Settings:
    """What is set on a strategy, and where each value came from."""

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy
        self.used: dict[str, dict[str, Any]] = {}

    def put(self, name: str, value: Any, source: str) -> None:
        if not hasattr(self.strategy, name):
            if source == "task strategy_conf":
                raise ValueError(f"strategy {type(self.strategy).__name__} has no parameter {name!r}")
            return
        setattr(self.strategy, name, value)
        self.used[name] = {"value": value, "source": source}

    def apply_task(self, task: dict[str, Any], names: tuple[str, str, str, str, str]) -> None:
        """The task's explicit settings replace the strategy's own: participants, then strategy_conf."""
        available, fit, evaluate, fraction_fit, fraction_evaluate = names
        minimum, ratio = task.get("min_participants"), task.get("participants_ratio")
        if minimum is not None:
            per_round = max(1, math.ceil(int(minimum) * float(ratio if ratio is not None else 1.0)))
            self.put(available, int(minimum), "task min_participants")
            self.put(fit, per_round, "task min_participants")
            self.put(evaluate, per_round, "task min_participants")
        if ratio is not None:
            self.put(fraction_fit, float(ratio), "task participants_ratio")
            self.put(fraction_evaluate, float(ratio), "task participants_ratio")
        for key, value in (task.get("strategy_conf") or {}).items():
            self.put(key, value, "task strategy_conf")


def complete_older_pickle(strategy: Any) -> list[str]:
    """Give a strategy pickled by an older flwr the attributes the pinned flwr's methods read, with the
    class's defaults (aerOS's FedAvg, pickled by flwr 1.3.0, has no `inplace`); return their names.

    Unpickling restores only the attributes the old version had; a class whose constructor needs
    arguments cannot say its defaults and is left as it is."""
    try:
        defaults = vars(type(strategy)())
    except Exception:  # any constructor that cannot run without arguments
        return []
    missing = {name: value for name, value in defaults.items() if name not in vars(strategy)}
    vars(strategy).update(missing)
    return sorted(missing)


def configure(strategy: Strategy, task: dict[str, Any], model: LocalModel, start: Weights | None) -> dict[str, Any]:
    """Apply the task's explicit settings and the initial weights; return {setting: {value, source}}.

    `start`: weights that must be used (a checkpoint on resume); else the strategy's own initial
    parameters if it has any (checked against the model's shapes), else the model's.
    """
    complete_older_pickle(strategy)
    settings = _Settings(strategy)
    put, used = settings.put, settings.used
    settings.apply_task(task, LEGACY_NAMES)

    own = getattr(strategy, "initial_parameters", None)
    if start is not None:
        initial, source = start, "checkpoint"
    elif isinstance(own, Parameters) and own.tensors:
        initial, source = parameters_to_ndarrays(own), "strategy"
        model.check_weights(initial)
    else:
        initial, source = model.get_weights(), "model file"
    put("initial_parameters", ndarrays_to_parameters(initial), source)
    if hasattr(strategy, "current_weights"):  # the FedOpt family keeps its own copy
        strategy.current_weights = initial
    for name in METRIC_FUNCTIONS:
        if getattr(strategy, name, None) is None:
            put(name, weighted_average, "flrepo weighted average")
        elif hasattr(strategy, name):
            used[name] = {"value": getattr(getattr(strategy, name), "__name__", "custom"), "source": "strategy"}
    for name in REPORTED:
        if name not in used and hasattr(strategy, name):
            used[name] = {"value": getattr(strategy, name), "source": "strategy"}
    return {name: _plain(entry) for name, entry in used.items()}


def _plain(entry: dict[str, Any]) -> dict[str, Any]:
    """A JSON-friendly record of one setting (functions and parameters by description)."""
    value = entry["value"]
    if isinstance(value, Parameters):
        value = f"{len(value.tensors)} arrays"
    elif callable(value):
        value = getattr(value, "__name__", "function")
    elif not isinstance(value, int | float | str | bool | type(None)):
        value = repr(value)[:200]
    return {"value": value, "source": entry["source"]}


# --- Message-API strategies (flwr.serverapp.strategy) ---------------------------------------------

MESSAGE_REPORTED = (*MESSAGE_NAMES, *ALGORITHM_SETTINGS, "weighted_by_key")


def configure_message(
    strategy: Any, task: dict[str, Any], model: LocalModel, start: Weights | None
) -> tuple[dict[str, Any], Weights]:
    """The same rules for a `flwr.serverapp.strategy` object (nodes instead of clients): the task's
    explicit settings replace the strategy's own; returns ({setting: {value, source}}, the initial
    weights: `start` if given (a checkpoint), else the model file's). Message strategies carry no
    initial parameters: `Strategy.start` takes them."""
    settings = _Settings(strategy)
    settings.apply_task(task, MESSAGE_NAMES)
    used = settings.used
    initial, source = (start, "checkpoint") if start is not None else (model.get_weights(), "model file")
    used["initial_arrays"] = {"value": f"{len(initial)} arrays", "source": source}
    for name in MESSAGE_REPORTED:
        if name not in used and hasattr(strategy, name):
            used[name] = {"value": getattr(strategy, name), "source": "strategy"}
    return {name: _plain(entry) for name, entry in used.items()}, initial
