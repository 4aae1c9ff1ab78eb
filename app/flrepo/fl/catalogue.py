"""The built-in catalogue: Flower's strategies and flrepo's transformations, signed.

Strategies are pickled instances made with their defaults (cloudpickle stores flwr classes by
reference); the collector applies a task's `strategy_conf` and the initial weights to the loaded
instance. The legacy ones (`flwr.server.strategy`) run on Flower's gRPC server as aerOS did;
FedAdam, FedYogi and FedAdagrad need initial parameters at construction: they are made with an
empty placeholder that the collector replaces. The `message-*` ones (`flwr.serverapp.strategy`)
run on Flower's SuperLink/SuperNode runtime.
"""

from __future__ import annotations

import inspect
import io
import logging
from typing import Any

import cloudpickle
import flwr
from flwr.common import Parameters
from flwr.server import strategy as flwr_strategy

from flrepo.client import Conflict, NotFound, RepositoryClient, artifacts
from flrepo.client.artifacts import Kind
from flrepo.fl.transformations import BUILTIN

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


MESSAGE_STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "message-fedavg": ("FedAvg", {}),
    "message-fedprox": ("FedProx", {"proximal_mu": 0.1}),
    "message-fedadam": ("FedAdam", {}),
    "message-fedmedian": ("FedMedian", {}),
    "message-fedtrimmedavg": ("FedTrimmedAvg", {}),
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
    if name in MESSAGE_STRATEGIES:
        from flwr.serverapp import strategy as message_strategy

        class_name, kwargs = MESSAGE_STRATEGIES[name]
        module, cls = "flwr.serverapp.strategy", getattr(message_strategy, class_name)
    else:
        class_name, kwargs = STRATEGIES[name]
        module, cls = "flwr.server.strategy", getattr(flwr_strategy, class_name)
    data = cloudpickle.dumps(cls(**kwargs))
    runtime = "message" if name in MESSAGE_STRATEGIES else "legacy"
    meta = {"class": f"{module}.{class_name}", "parameters": _parameters(cls), "flwr": flwr.__version__}
    return data, {**meta, "runtime": runtime}


def _has_file(repo: RepositoryClient, kind: Kind, name: str) -> bool | None:
    """True with a file, False registered without one (an interrupted seed), None when absent."""
    try:
        item = repo.send(artifacts.get_call(kind, name))
    except NotFound:
        return None
    return item.size is not None


def seed(repo: RepositoryClient) -> dict[str, list[str]]:
    """Upload, signed with the client's key, every built-in item that is not there yet; report what
    was added and what was kept. An item registered without its file is completed."""
    repo.keyring.require_signing("the signed catalogue")  # checked first, so nothing is left half-seeded
    report: dict[str, list[str]] = {"added": [], "kept": []}
    for name, (class_name, _) in [*STRATEGIES.items(), *MESSAGE_STRATEGIES.items()]:
        state = _has_file(repo, "strategy", name)
        if state:
            report["kept"].append(f"strategy {name}")
            continue
        data, meta = strategy_artifact(name)
        if state is None:
            try:
                kind = "Message-API " if name in MESSAGE_STRATEGIES else ""
                repo.create_strategy(name, f"Flower {kind}{class_name}", meta)
            except Conflict:  # created meanwhile by another seeder
                log.info("strategy %s was created concurrently", name)
        repo.upload_strategy(name, io.BytesIO(data), filename=f"{name}.pkl", sign=True)
        report["added"].append(f"strategy {name}")
    for cls in BUILTIN:
        item = dict(cls.AEROS)
        transformation_id = item.pop("id")
        state = _has_file(repo, "transformation", transformation_id)
        if state:
            report["kept"].append(f"transformation {transformation_id}")
            continue
        data = cloudpickle.dumps(cls)
        if state is None:
            try:
                item["meta"] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
                repo.create_transformation(transformation_id, **item)
            except Conflict:
                log.info("transformation %s was created concurrently", transformation_id)
        filename = f"{transformation_id}.pkl"
        repo.upload_transformation(transformation_id, io.BytesIO(data), filename=filename, sign=True)
        report["added"].append(f"transformation {transformation_id}")
    return report
