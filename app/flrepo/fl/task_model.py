"""The task's model as the collector and every local execution get it: the file of `model` from
the repository, opened by the client its `meta.library` names, and the task's training settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flrepo.client import RepositoryClient
from flrepo.fl import pinning
from flrepo.fl.frameworks import LocalModel, ModelError, Training, library_name, open_model, unknown_training_keys


def fetch_model(
    repo: RepositoryClient, task: dict[str, Any], workdir: Path, allow_unsigned: bool = False
) -> LocalModel:
    """The task's model file as the task pinned it (flrepo.fl.pinning), loaded; ModelError when it
    cannot be (no client, wrong file, no file), PinMismatch when the file is not the pinned one."""
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
        return open_model(library, path, meta)
    except ModelError as exc:
        raise ModelError(f"model {name}/{version}: {exc}") from None


def training_settings(task: dict[str, Any]) -> Training:
    """The task's `training`, checked: ModelError naming any setting no client knows."""
    training = dict(task.get("training") or {})
    unknown = unknown_training_keys(training)
    if unknown:
        raise ModelError(f"unknown training setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    return Training.from_config({k: v for k, v in training.items() if v is not None})
