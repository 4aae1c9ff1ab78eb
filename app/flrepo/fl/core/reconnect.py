"""A site's stay in its task: take part, and when the collector goes away while the task still
runs (a collector restarted for the task resumes from its checkpoint) try again, for at most
RECONNECT_SECONDS; stop when the task ends. Both runtimes' participants run this loop with their
own attempt (a Flower gRPC client, a SuperNode)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flrepo.client import RepositoryClient, RepositoryError
from flrepo.fl.core.lifecycle import exit_code
from flrepo.fl.core.watch import ended

log = logging.getLogger(__name__)
# How long a local execution keeps trying to reach a collector that went away mid-task.
RECONNECT_SECONDS = 300.0


def stay(
    repo: RepositoryClient,
    task_id: str,
    attempt: Callable[[], int | None],
    seconds: float = RECONNECT_SECONDS,
    pause: float = 2.0,
) -> int:
    """Run `attempt` until it gives an exit code (None: the collector went away) or the task ends
    (its exit code); 1 when no collector came back within `seconds`."""
    lost_since: float | None = None
    while True:
        code = attempt()
        if code is not None:
            return code
        try:
            end = ended(repo, task_id)
        except RepositoryError as exc:  # the repository cannot say: keep trying
            log.warning("task %s: %s", task_id, exc)
            end = None
        if end is not None:
            return exit_code(end)
        lost_since = lost_since or time.monotonic()
        if time.monotonic() - lost_since > seconds:
            log.error("task %s: no collector for %.0f s; giving up", task_id, seconds)
            return 1
        log.warning("task %s: lost the collector; reconnecting", task_id)
        time.sleep(pause)
