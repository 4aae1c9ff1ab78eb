"""Loading exactly what a task pinned: the sha256 of its strategy, transformations and model, recorded
by the repository when the task was created (the task's `pins`, shown in its status).

A signature says who published a file, not which version a task was planned with: a writer could put
back an older, validly signed strategy. Training collectors and local executions therefore load through
these functions, which refuse (PinMismatch) any file whose sha256 is not the pinned one, before anything
is unpickled or trained. Signatures are still checked (flrepo.signing); `allow_unsigned` relaxes those
only, never the pins, except for tasks created before pinning (which have none), which then load with
a warning.

Call sites: a collector loads its strategy with `load_strategy(repo, task, allow_unsigned)`; the
framework clients fetch the task's model file with `download_model` (flrepo.fl.core.trainer); a local
execution loads each transformation with `load_transformation(repo, task, ref["id"], allow_unsigned)`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flrepo.client import RepositoryClient, calls
from flrepo.client.transfer import Dest, Downloaded
from flrepo.signing import PinMismatch

log = logging.getLogger(__name__)


def _pins(task: dict[str, Any], allow_unsigned: bool) -> dict[str, Any] | None:
    pins = task.get("pins")
    if pins is not None:
        return dict(pins)
    if not allow_unsigned:
        raise PinMismatch(
            f"task {task.get('task_id')!r} pins no digests (created before pinning): recreate it, "
            "or run with --allow-unsigned to load whatever is stored now"
        )
    log.warning("task %s pins no digests: loading what is stored now (allow_unsigned)", task.get("task_id"))
    return None


def pinned_sha256(task: dict[str, Any], what: str, name: str | None = None, *, allow_unsigned: bool = False) -> Any:
    """The pinned sha256 of the task's "model", "strategy" or transformation `name` (None: no file was
    pinned, or the task has no pins and `allow_unsigned` is set); PinMismatch when it pins nothing for it."""
    pins = _pins(task, allow_unsigned)
    if pins is None:
        return None
    if what == "transformation":
        pin = next((p for p in pins.get("transformations") or [] if p.get("id") == name), None)
        if pin is None:
            raise PinMismatch(f"task {task.get('task_id')!r} pins no transformation {name!r}")
        return pin.get("sha256")
    return (pins.get(what) or {}).get("sha256")


def load_strategy(repo: RepositoryClient, task: dict[str, Any], allow_unsigned: bool = False) -> Any:
    """The task's strategy object: the pinned version, signature checked, then unpickled."""
    name = task["strategy"]["strategy_name"]
    sha = pinned_sha256(task, "strategy", allow_unsigned=allow_unsigned)
    return repo.load_strategy(name, allow_unsigned=allow_unsigned, sha256=sha)


def load_transformation(
    repo: RepositoryClient, task: dict[str, Any], transformation_id: str, allow_unsigned: bool = False
) -> Any:
    """One of the task's transformations: the pinned version, signature checked, then unpickled."""
    sha = pinned_sha256(task, "transformation", transformation_id, allow_unsigned=allow_unsigned)
    return repo.load_transformation(transformation_id, allow_unsigned=allow_unsigned, sha256=sha)


def download_model(
    repo: RepositoryClient, task: dict[str, Any], dest: Dest, allow_unsigned: bool = False
) -> Downloaded | None:
    """Stream the task's model file into `dest` if it is the pinned one (PinMismatch otherwise, and a
    file written to a path is removed). None: the model had no file when the task was created and has
    none now (the trainer's own initialisation applies)."""
    name, version = task["model"]["model_name"], task["model"]["model_version"]
    pins = _pins(task, allow_unsigned)
    sha = (pins.get("model") or {}).get("sha256") if pins is not None else None
    if sha is None:
        has_file = repo.get_model(name, version).model_id is not None
        if pins is not None and has_file:
            raise PinMismatch(f"model {name}/{version} has a file now but had none when the task was created")
        if not has_file:
            return None
    done = repo.download(calls.model_file(name, version), dest, resume=False)
    if sha is not None and done.sha256 != sha:
        if isinstance(dest, str | Path):
            Path(dest).unlink(missing_ok=True)
        raise PinMismatch(f"model {name}/{version} is now {done.sha256[:12]}…, not the pinned {sha[:12]}…")
    return done
