"""A task's lifecycle as a collector or a local execution sees it, on either Flower runtime: the
collector's start (Running, with where participants connect), its stop when the task ended without
it, failing the task (collector or site), and the one rule for a process's exit code."""

from __future__ import annotations

import logging
import socket
from typing import Any

from flrepo.client import RepositoryClient, RepositoryError
from flrepo.fl.core.link import IDENTITY, TaskLink
from flrepo.fl.core.publishing import Written, undo
from flrepo.fl.core.resume import Resume
from flrepo.fl.core.watch import Ended, ended
from flrepo.fl.tls import ServerTls

log = logging.getLogger(__name__)


class Stopped(Exception):
    """The task ended while Flower was mid-call in this process. The process should end at once with
    `code` (flrepo.cli does, with os._exit): at a normal interpreter exit, gRPC's finalizer of a
    channel cut mid-stream can wait forever."""

    def __init__(self, code: int) -> None:
        super().__init__(f"stopped with exit code {code}")
        self.code = code


def exit_code(end: Ended) -> int:
    """A collector's or local execution's exit code for a task that ended: 0 when it Succeeded or
    was cancelled, 1 when it Failed."""
    return 0 if end.phase == "Succeeded" or end.cancelled else 1


def started(
    link: TaskLink,
    task: dict[str, Any],
    settings: dict[str, Any] | None,
    resume: Resume | None,
    runtime: str,
    address: str,
    tls: ServerTls | None,
) -> None:
    """Running, with where participants connect and what they trust (what sites discover:
    flrepo.fl.core.discovery)."""
    fields: dict[str, Any] = {
        "phase": "Running",
        "runtime": runtime,
        "server_address": address,
        "collector": IDENTITY,
        "active": 0,
    }
    if settings is not None:
        fields["strategy_settings"] = settings
    if tls is not None:
        fields["server_ca"] = tls.ca_pem
    how = f"Flower {'SuperLink' if runtime == 'message' else 'server'} on {address} ({'TLS' if tls else 'plaintext'})"
    if resume:
        fields.update(
            reason="Resumed",
            message=f"{how}; resumed after round {resume.round} (its checkpoint)",
            resumed_from_round=resume.round,
        )
    else:
        fields.update(reason="ServerStarted", message=how)
    link.report(**fields)


def stopped(link: TaskLink, task: dict[str, Any], end: Ended, written: Written) -> int:
    """The task ended without this collector (cancelled, failed by a site or the service): nothing
    this run wrote is left behind; the exit code."""
    undo(link, task, written)
    log.warning("task %s ended while it ran: %s; collector stopped", task["task_id"], end)
    return exit_code(end)


def mark_failed(link: TaskLink, exc: BaseException, who: str = "") -> Ended | None:
    """Mark the task Failed with the exception's class as reason and `who` before the message;
    how the task had ended instead when it had (then it is left as it is)."""
    task_id = link.task_id
    try:
        end = ended(link.repo, task_id)
        if end is not None:
            return end
        message = f"{who}: {exc}" if who else str(exc)
        log.error("task %s failed: %s", task_id, message, exc_info=exc)
        link.report(phase="Failed", reason=type(exc).__name__, message=message[:2000], active=0)
    except RepositoryError as report_error:
        log.error("could not mark task %s Failed: %s", task_id, report_error)
    return None


def fail(link: TaskLink, task: dict[str, Any], exc: BaseException, written: Written) -> int:
    """The collector's failure: what it wrote removed, the task Failed (unless it ended otherwise
    meanwhile, then as `stopped`); the exit code."""
    undo(link, task, written)
    end = mark_failed(link, exc)
    if end is not None:  # cancelled (or failed by a site) while this collector finished up
        return stopped(link, task, end, Written())
    return 1


def fail_site(repo: RepositoryClient, task_id: str, exc: BaseException) -> None:
    """A site that cannot take part fails the task with its reason (unless it has ended already)."""
    mark_failed(TaskLink(repo, task_id), exc, who=f"local execution on {socket.gethostname()}")
