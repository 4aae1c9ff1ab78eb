"""The training collector: runs one repository task to its end and reports every round.

It reads the task and loads the signed strategy; the strategy's type chooses the Flower runtime: a
`flwr.server.strategy` object runs on Flower's legacy gRPC server (flrepo.fl.legacy, the
aerOS-compatible path), a `flwr.serverapp.strategy` object on Flower's SuperLink/SuperNode runtime
with a ServerApp (flrepo.fl.message). Both adapt the same core (flrepo.fl.core): either way the
collector publishes where participants connect (and, with TLS, the CA to trust) in the task's
status, heartbeats while it runs, stops when the task is cancelled, bounds the wait for
participants, checkpoints the aggregated weights after every round, and on success publishes the
trained model as a new version of the task's model in its native format, beside the aerOS training
result (results + .npz weights).

A collector started again for a task whose collector died (within the task's heartbeat_timeout)
resumes after the last checkpoint: the completed rounds are not repeated and the round count stays
the configured one.
"""

from __future__ import annotations

import logging

from flrepo.client import RepositoryClient
from flrepo.fl import pinning
from flrepo.fl.core.lifecycle import fail
from flrepo.fl.core.link import TaskLink
from flrepo.fl.core.publishing import Written
from flrepo.fl.core.serving import Serving
from flrepo.fl.flower_logs import through_flrepo_only
from flrepo.schemas.tasks import TERMINAL

log = logging.getLogger(__name__)

__all__ = ["Serving", "run", "runtime_of"]


def runtime_of(strategy: object, name: str) -> str:
    """ "legacy" or "message" by the strategy's type; TypeError for anything else."""
    from flwr.server.strategy import Strategy

    if isinstance(strategy, Strategy):
        return "legacy"
    from flwr.serverapp.strategy import Strategy as MessageStrategy

    if isinstance(strategy, MessageStrategy):
        return "message"
    raise TypeError(
        f"strategy {name!r} is a {type(strategy).__name__}, neither a flwr.server.strategy nor a "
        "flwr.serverapp.strategy Strategy"
    )


def run(repo: RepositoryClient, task_id: str, serving: Serving, allow_unsigned: bool = False) -> int:
    """Run the task to its end: 0 when it Succeeded or was cancelled, 1 when it Failed (the task says why)."""
    task = repo.get_task(task_id).model_dump()
    if task["phase"] in TERMINAL:
        log.error("task %s is %s already; nothing to run", task_id, task["phase"])
        return 1
    name = task["strategy"]["strategy_name"]
    link = TaskLink(repo, task_id)  # every report this collector makes to its task goes through it
    try:
        strategy = pinning.load_strategy(repo, task, allow_unsigned)  # the pinned version, signature checked
        runtime = runtime_of(strategy, name)
    except Exception as exc:
        return fail(link, task, exc, Written())
    through_flrepo_only()
    if runtime == "message":
        from flrepo.fl.message.collector import run as run_message

        return run_message(link, task, serving, allow_unsigned)
    from flrepo.fl.legacy.collector import run as run_legacy

    return run_legacy(link, task, strategy, serving, allow_unsigned)
