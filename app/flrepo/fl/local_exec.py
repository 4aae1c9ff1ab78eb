"""A local execution: one site that trains the task's model on its own data.

It prepares the site's trainer (flrepo.fl.core.trainer: the task's model loaded with the client its
`meta.library` names, the task's signed transformations applied to the local data, the data
checked against the model, a local validation split); data or a model it cannot use fails the task
at once, with the reason, before it joins. It then finds the collector through the task's status
(flrepo.fl.core.discovery: address, runtime and, with TLS, the CA to trust; bounded, unless told
`--server`), and the published runtime chooses how it takes part: a Flower gRPC client in this
process (flrepo.fl.legacy.participant) or Flower's SuperNode (flrepo.fl.message.participant). It
exits when the task ends: 0 when it Succeeded or was cancelled, 1 when it Failed.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

from flrepo.client import RepositoryClient
from flrepo.fl.core.discovery import DiscoveryTimeout, Site, discover
from flrepo.fl.core.lifecycle import Stopped, exit_code, fail_site
from flrepo.fl.core.trainer import prepare
from flrepo.fl.core.watch import Ended
from flrepo.fl.flower_logs import through_flrepo_only
from flrepo.fl.frameworks import ModelError
from flrepo.fl.local_data import DataError

if TYPE_CHECKING:
    from flrepo.fl.message.site_superexec import PreFork

log = logging.getLogger(__name__)

__all__ = ["DiscoveryTimeout", "Site", "Stopped", "fail_site", "run"]


def run(
    repo: RepositoryClient,
    task_id: str,
    site: Site,
    x: NDArray[Any],
    y: NDArray[Any],
    allow_unsigned: bool = False,
    seed: int = 0,
) -> int:
    """Join the task's training with local data (x, y); 0 when the task Succeeded or was cancelled,
    1 when it Failed or this site could not take part (the task is then Failed with the reason)."""
    task = repo.get_task(task_id).model_dump()
    forked: list[PreFork] = []
    legacy = _declared_runtime(repo, task) == "legacy"

    def loaded() -> None:
        # The model is loaded and its framework has run nothing yet: the last moment a PyTorch
        # process can fork a child that will use PyTorch (flrepo.fl.message.site_superexec). Not for
        # a strategy declared legacy: the child would cost the site's training its copy-on-write faults.
        from flrepo.fl.message.site_superexec import prefork

        if not legacy and (child := prefork()) is not None:
            forked.append(child)

    try:
        return _run(repo, task, site, x, y, allow_unsigned, seed, loaded, forked)
    finally:
        for child in forked:
            child.cancel()


def _declared_runtime(repo: RepositoryClient, task: dict[str, Any]) -> str | None:
    """The runtime the task's strategy declares in its metadata (the signed catalogue's do), a hint
    only: the collector decides by the strategy's type, and publishes it (None: not declared)."""
    try:
        meta = repo.get_strategy(task["strategy"]["strategy_name"]).meta or {}
    except Exception as exc:  # a hint: the site goes on without it
        log.debug("task %s: no strategy metadata: %s", task.get("task_id"), exc)
        return None
    runtime = meta.get("runtime")
    return runtime if isinstance(runtime, str) else None


def _run(
    repo: RepositoryClient,
    task: dict[str, Any],
    site: Site,
    x: NDArray[Any],
    y: NDArray[Any],
    allow_unsigned: bool,
    seed: int,
    loaded: Callable[[], None],
    forked: list[PreFork],
) -> int:
    task_id = task["task_id"]
    with tempfile.TemporaryDirectory(prefix="flrepo-local-") as tmp:
        try:
            trainer = prepare(repo, task, x, y, Path(tmp), allow_unsigned, seed, loaded)
        except (ModelError, DataError) as exc:
            log.error("task %s: %s", task_id, exc)
            fail_site(repo, task_id, exc)
            return 1
        # Ready to train: what remains is to find the collector (an operator, and a test, can tell
        # a site still starting from one waiting for its collector).
        log.info("task %s: ready; waiting for its collector's address", task_id)
        found = discover(repo, task_id, site)
        if isinstance(found, Ended):
            log.warning("task %s ended before this site joined: %s", task_id, found)
            return exit_code(found)
        log.info(
            "local execution for task %s: %d training samples, %s runtime at %s (%s)",
            task_id,
            len(trainer.y_train),
            found.runtime,
            found.address,
            "TLS" if found.ca else "plaintext",
        )
        through_flrepo_only()
        if found.runtime == "message":
            from flrepo.fl.message.participant import run as run_supernode

            return run_supernode(repo, task, found, site, trainer, Path(tmp), forked[0] if forked else None)
        for child in forked:  # the legacy runtime trains in this process
            child.cancel()
        from flrepo.fl.legacy.participant import run as run_legacy

        return run_legacy(repo, task_id, found, trainer)
