"""A task's lifecycle as a collector or a local execution sees it, on either Flower runtime: the
collector's start (Running, with where participants connect), its stop when the task ended without
it, failing the task (collector or site), and the one rule for a process's exit code."""

from __future__ import annotations

import logging
import socket
from typing import Any

from flrepo.client import Forbidden, RepositoryClient, RepositoryError
from flrepo.fl.core import discovery
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


# What the Running report says of the participants (none connected yet): the collector's heartbeat
# starts from it (flrepo.fl.core.watch.Heartbeat `shown`) and writes only a change.
RUNNING_PROGRESS: dict[str, Any] = {"active": 0}


def started(
    link: TaskLink,
    task: dict[str, Any],
    settings: dict[str, Any] | None,
    resume: Resume | None,
    runtime: str,
    address: str,
    tls: ServerTls | None,
) -> None:
    """Running, with where participants connect and what they trust, signed by the collector (what sites
    discover and verify: flrepo.fl.core.discovery)."""
    # The CA sites will read: this run's, else whatever the task holds (a status cannot clear it).
    ca = tls.ca_pem if tls is not None else task.get("server_ca")
    signer = discovery.collector_keyring(fallback=link.repo.keyring)
    fields: dict[str, Any] = {
        "phase": "Running",
        **discovery.signed_fields(signer, task["task_id"], runtime, address, ca),
        "collector": IDENTITY,
        **RUNNING_PROGRESS,
    }
    if settings is not None:
        fields["strategy_settings"] = settings
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
    """A site that cannot take part says why in its own record of the task (`PUT /tasks/{id}/sites`); the
    task's collector then fails the task with that reason (flrepo.fl.core.watch.Heartbeat). Where this
    site's key may write the task's status itself (an admin's, or a service without keys) it fails the
    task at once, as when no collector runs yet."""
    site = socket.gethostname()
    try:
        repo.report_site(task_id, site, "failed", reason=type(exc).__name__, message=str(exc)[:2000])
    except RepositoryError as report_error:
        log.error("could not report this site's failure to task %s: %s", task_id, report_error)
    try:
        end = ended(repo, task_id)
        if end is None:
            message = f"local execution on {site}: {exc}"[:2000]
            repo.update_task_status(task_id, phase="Failed", reason=type(exc).__name__, message=message, active=0)
    except Forbidden:  # the task is its collector's: the site's record is what this site may write
        log.info("task %s: this site's failure is in its record; the task's collector fails the task", task_id)
    except RepositoryError as report_error:
        log.error("could not mark task %s Failed: %s", task_id, report_error)
