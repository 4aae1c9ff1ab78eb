"""The task's model as the collector and every local execution get it: the file of `model` from
the repository, opened by the client its `meta.library` names, and the task's training settings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flrepo.client import RepositoryClient
from flrepo.fl import pinning
from flrepo.fl.frameworks import (
    LocalModel,
    ModelError,
    Training,
    file_format,
    library_name,
    open_model,
    unknown_training_keys,
)
from flrepo.fl.frameworks.pt2_weights import Pt2Weights, Unreadable

log = logging.getLogger(__name__)


def fetch_model(
    repo: RepositoryClient,
    task: dict[str, Any],
    workdir: Path,
    allow_unsigned: bool = False,
    weights_only: bool = False,
) -> LocalModel:
    """The task's model file as the task pinned it (flrepo.fl.pinning), loaded; ModelError when it
    cannot be (no client, wrong file, no file), PinMismatch when the file is not the pinned one.
    `weights_only`: the caller only gets, sets and saves weights (it aggregates), so a .pt2 is read
    without PyTorch where it can be (flrepo.fl.frameworks.pt2_weights)."""
    name, version = task["model"]["model_name"], task["model"]["model_version"]
    item = repo.get_model(name, version)
    meta = item.meta or {}  # aerOS-era models may have `meta: null`
    library = meta.get("library")
    client = library_name(library)
    path = workdir / "model"
    if pinning.download_model(repo, task, path, allow_unsigned) is None:
        if client == "numpy":
            from flrepo.fl.frameworks.numpy_model import NumpyModel

            return NumpyModel.from_meta(meta)
        raise ModelError(f"model {name}/{version} has no file yet: upload its {library} model first")
    try:
        return open_task_model(library, path, meta, weights_only)
    except ModelError as exc:
        raise ModelError(f"model {name}/{version}: {exc}") from None


def open_task_model(library: str | None, path: Path, meta: dict[str, Any], weights_only: bool) -> LocalModel:
    """`open_model`, except that with `weights_only` a .pt2 is read without PyTorch when it can be."""
    if weights_only and library_name(library) == "pytorch" and file_format(path) == "pt2":
        try:
            return Pt2Weights.load(path, meta)
        except Unreadable as exc:
            log.info("%s: loading it with PyTorch (%s)", path.name, exc)
    return open_model(library, path, meta)


def training_settings(task: dict[str, Any]) -> Training:
    """The task's `training`, checked: ModelError naming any setting no client knows."""
    training = dict(task.get("training") or {})
    unknown = unknown_training_keys(training)
    if unknown:
        raise ModelError(f"unknown training setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    return Training.from_config({k: v for k, v in training.items() if v is not None})
