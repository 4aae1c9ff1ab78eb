"""The built-in catalogue: Flower's strategies (Message API first, then legacy) and flrepo's
transformations, signed (Ed25519).

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
from dataclasses import replace
from typing import Any

import cloudpickle
import flwr
from flwr.common import Parameters
from flwr.server import strategy as flwr_strategy

from flrepo.client import Conflict, NotFound, RepositoryClient, artifacts
from flrepo.client.artifacts import Kind
from flrepo.fl.transformations import BUILTIN
from flrepo.signing import SignatureError, verify_digest

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


def _state(repo: RepositoryClient, kind: Kind, name: str) -> str:
    """ "absent"; "no file" (registered by an interrupted seed); "signed" (a valid Ed25519 signature by a
    trusted key over the recorded file); or "unsigned" (no signature, a legacy HMAC one, or an invalid one)."""
    try:
        item = repo.send(artifacts.get_call(kind, name))
    except NotFound:
        return "absent"
    if item.size is None or item.sha256 is None:
        return "no file"
    strict = replace(repo.keyring, allow_legacy_hmac=False)  # HMAC signatures are what re-signing replaces
    try:
        verify_digest(strict, kind, name, item.sha256, item.size, item.meta or {}, allow_unsigned=False)
    except SignatureError:
        return "unsigned"
    return "signed"


def _put(repo: RepositoryClient, kind: Kind, name: str, state: str, data: bytes, report: dict[str, list[str]]) -> None:
    label = f"{kind} {name}"
    upload = repo.upload_strategy if kind == "strategy" else repo.upload_transformation
    upload(name, io.BytesIO(data), filename=f"{name}.pkl", sign=True)
    report["resigned" if state == "unsigned" else "added"].append(label)


def seed(repo: RepositoryClient) -> dict[str, list[str]]:
    """Upload, signed with the client's Ed25519 key, every built-in item that is not there yet, and
    re-sign (a fresh upload, signed) every one whose signature is not a valid Ed25519 signature by a
    trusted key (unsigned, or HMAC-signed before the switch). Items validly signed are kept, so a
    publisher's own version of an item stays. Returns what was added, re-signed and kept; an item
    registered without its file is completed."""
    repo.keyring.require_signing("the signed catalogue")  # checked first, so nothing is left half-seeded
    report: dict[str, list[str]] = {"added": [], "resigned": [], "kept": []}
    # The Message-API strategies first: they are what a new task should use; the legacy ones are
    # there for aerOS tasks and clients.
    for name, (class_name, _) in [*MESSAGE_STRATEGIES.items(), *STRATEGIES.items()]:
        state = _state(repo, "strategy", name)
        if state == "signed":
            report["kept"].append(f"strategy {name}")
            continue
        data, meta = strategy_artifact(name)
        if state == "absent":
            try:
                kind = "Message-API " if name in MESSAGE_STRATEGIES else ""
                repo.create_strategy(name, f"Flower {kind}{class_name}", meta)
            except Conflict:  # created meanwhile by another seeder
                log.info("strategy %s was created concurrently", name)
        _put(repo, "strategy", name, state, data, report)
    for cls in BUILTIN:
        item = dict(cls.AEROS)
        transformation_id = item.pop("id")
        state = _state(repo, "transformation", transformation_id)
        if state == "signed":
            report["kept"].append(f"transformation {transformation_id}")
            continue
        if state == "absent":
            try:
                item["meta"] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
                repo.create_transformation(transformation_id, **item)
            except Conflict:
                log.info("transformation %s was created concurrently", transformation_id)
        _put(repo, "transformation", transformation_id, state, cloudpickle.dumps(cls), report)
    return report
