"""The built-in catalogue: Flower's legacy strategies and flrepo's transformations, signed.

Strategies are pickled instances made with their defaults (cloudpickle stores flwr classes by
reference); the collector applies a task's `strategy_conf` and the initial weights to the loaded
instance. FedAdam, FedYogi and FedAdagrad need initial parameters at construction: they are made
with an empty placeholder that the collector replaces.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import cloudpickle
import flwr
from flwr.common import Parameters
from flwr.server import strategy as flwr_strategy

from app.fl.repo import Repo, RepositoryError
from app.fl.transformations import BUILTIN
from app.signing import Keyring, sign

log = logging.getLogger(__name__)

_PLACEHOLDER = Parameters(tensors=[], tensor_type="numpy.ndarray")
STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "fedavg": ("FedAvg", {}),
    "fedprox": ("FedProx", {"proximal_mu": 0.1}),
    "fedadam": ("FedAdam", {"initial_parameters": _PLACEHOLDER}),
    "fedyogi": ("FedYogi", {"initial_parameters": _PLACEHOLDER}),
    "fedadagrad": ("FedAdagrad", {"initial_parameters": _PLACEHOLDER}),
    "fedavgm": ("FedAvgM", {}),
    "fedmedian": ("FedMedian", {}),
    "fedtrimmedavg": ("FedTrimmedAvg", {}),
    "krum": ("Krum", {}),
    "qfedavg": ("QFedAvg", {}),
    "fault-tolerant-fedavg": ("FaultTolerantFedAvg", {}),
}


def _parameters(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, param in inspect.signature(cls).parameters.items():
        if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        default = param.default
        if default is inspect.Parameter.empty or callable(default) or isinstance(default, Parameters):
            default = None
        out[name] = default if isinstance(default, (int, float, str, bool, type(None))) else repr(default)
    return out


def strategy_artifact(name: str) -> tuple[bytes, dict[str, Any]]:
    class_name, kwargs = STRATEGIES[name]
    cls = getattr(flwr_strategy, class_name)
    data = cloudpickle.dumps(cls(**kwargs))
    meta = {"class": f"flwr.server.strategy.{class_name}", "parameters": _parameters(cls), "flwr": flwr.__version__}
    return data, meta


def seed(repo: Repo, keyring: Keyring) -> dict[str, list[str]]:
    """Upload every built-in item that is not there yet; report what was added and what was kept."""
    report: dict[str, list[str]] = {"added": [], "kept": []}
    existing = {s["strategy_name"] for s in repo.get("/strategy")}
    for name, (class_name, _) in STRATEGIES.items():
        if name in existing:
            report["kept"].append(f"strategy {name}")
            continue
        data, meta = strategy_artifact(name)
        body = {
            "strategy_name": name,
            "strategy_description": f"Flower {class_name}",
            "meta": {**meta, **sign(keyring, "strategy", name, data)},
        }
        try:
            repo.post("/strategy", body)
        except RepositoryError as exc:  # created meanwhile by another seeder
            log.info("strategy %s: %s", name, exc)
        repo.upload(f"/strategy/{name}", data, f"{name}.pkl")
        report["added"].append(f"strategy {name}")
    existing = {t["id"] for t in repo.get("/transformation")}
    for cls in BUILTIN:
        item = dict(cls.AEROS)
        if item["id"] in existing:
            report["kept"].append(f"transformation {item['id']}")
            continue
        data = cloudpickle.dumps(cls)
        item["meta"] = {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            **sign(keyring, "transformation", item["id"], data),
        }
        repo.post("/transformation", item)
        repo.upload(f"/transformation/{item['id']}", data, f"{item['id']}.pkl")
        report["added"].append(f"transformation {item['id']}")
    return report
