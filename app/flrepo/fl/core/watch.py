"""Knowing when a task ends while a collector or a local execution is busy with it: the one
home of "has the task ended" (`ended`, `ended_of`) and of the watchers built on it.

The collector's `Heartbeat` reports to the task every few seconds (the service marks a Running task
whose collector stopped reporting Failed, reason CollectorLost, after its `heartbeat_timeout`).
A report refused with 409 means the task ended without the collector — cancelled, failed by a
site, or given up by the service — and the collector stops; refused with 403, another collector has
claimed the task, and this one stops too. A site that reports it cannot take part (its own record)
makes the collector fail the task with the site's reason. A local execution's `TaskWatch` only
reads the task, with held requests (`GET /tasks/{id}?wait_end=`, answered the moment the task
ends): one request every WAIT_END_SECONDS per site rather than one every few seconds, and the end
is seen at once (a service that does not hold the request is asked every `interval` seconds, as
before). Both then call `on_end`, by default interrupting the main thread, where Flower's
server or client runs and where a KeyboardInterrupt is the one way to stop it mid-call.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flrepo.client import Conflict, Forbidden, RepositoryClient, RepositoryError
from flrepo.fl.core.link import TaskLink
from flrepo.schemas.tasks import CANCELLED, TERMINAL, TaskOut

log = logging.getLogger(__name__)
# Reports and reads this often at most: "every few seconds", and well inside any heartbeat_timeout.
MAX_INTERVAL = 5.0
# Why a collector stops when another collector claimed its task (this one fell silent too long).
CLAIM_LOST = "ClaimLost"
# How long a local execution's read of its task may be held by the service waiting for the end:
# under the service's bound (25 s) and the SDK's default timeout (60 s).
WAIT_END_SECONDS = 20.0


@dataclass(frozen=True)
class Ended:
    """How a task ended while this process was working on it."""

    phase: str
    reason: str
    message: str

    @property
    def cancelled(self) -> bool:
        return self.reason == CANCELLED

    def __str__(self) -> str:
        return f"{self.phase} ({self.reason}{': ' + self.message if self.message else ''})"

    @classmethod
    def of(cls, task: TaskOut) -> Ended:
        last = task.conditions[-1] if task.conditions else None
        return cls(task.phase, (last.reason or "") if last else "", (last.message or "") if last else "")


def ended_of(task: TaskOut) -> Ended | None:
    """How the task ended, or None while it has not."""
    return Ended.of(task) if task.phase in TERMINAL else None


def ended(repo: RepositoryClient, task_id: str, wait: float = 0.0) -> Ended | None:
    """Whether the task has ended, read from the repository (RepositoryError when it cannot say); with
    `wait`, the service holds the answer up to that many seconds until it has."""
    return ended_of(repo.get_task(task_id, history=0, wait_end=wait or None))


def failed_site(task: TaskOut, since: datetime) -> dict[str, str] | None:
    """The reason and message of the first site that reported (after `since`) it cannot take part."""
    for record in task.site_reports:
        stamp = record.time if record.time.tzinfo else record.time.replace(tzinfo=UTC)
        if record.state == "failed" and stamp >= since:
            message = f"local execution {record.site} (key {record.key_id}): {record.message or record.reason}"
            return {"reason": record.reason or "SiteFailed", "message": message[:2000]}
    return None


def interval_for(heartbeat_timeout: float) -> float:
    """A quarter of the timeout (a few reports may be lost), at most MAX_INTERVAL seconds."""
    return max(0.5, min(MAX_INTERVAL, heartbeat_timeout / 4))


def interrupt_main() -> None:
    """A real SIGINT to the main thread: it wakes blocking waits (a lock, a gRPC call), where
    `_thread.interrupt_main` only sets a flag that a blocked thread never checks."""
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


class _Watcher(threading.Thread):
    def __init__(self, repo: RepositoryClient, task_id: str, interval: float, on_end: Callable[[Ended], None]) -> None:
        super().__init__(daemon=True, name=f"{type(self).__name__.lower()}-{task_id}")
        self.repo, self.task_id, self.interval, self.on_end = repo, task_id, interval, on_end
        self.stopped = threading.Event()
        self.ending = threading.RLock()
        self.ended: Ended | None = None

    def stop(self) -> None:
        """Stop watching (before this process reports the task's end itself); waits for an
        in-flight report so it cannot be mistaken for someone else's."""
        with self.ending:
            self.stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(30)

    def pause(self, asked: float) -> float:
        """Seconds to wait before the next check, the last one having started at `asked`."""
        return self.interval

    def run(self) -> None:
        asked = time.monotonic()
        while not self.stopped.wait(self.pause(asked)):
            asked = time.monotonic()
            try:
                task = self.check()
            except RepositoryError as exc:  # the service may be briefly away; the next try may pass
                log.warning("task %s: %s", self.task_id, exc)
                continue
            end = task if isinstance(task, Ended) else ended_of(task) if task is not None else None
            with self.ending:  # never after stop() returned
                if end is None or self.stopped.is_set():
                    continue
                self.ended = end
                level = logging.INFO if self.ended.phase == "Succeeded" else logging.WARNING
                log.log(level, "task %s ended while this process worked on it: %s", self.task_id, self.ended)
                self.on_end(self.ended)
                return

    def check(self) -> TaskOut | Ended | None:
        raise NotImplementedError


class Heartbeat(_Watcher):
    """The collector's reports: `progress()` gives the fields to send each time (current round,
    connected participants); the first 409 means the task has ended."""

    def __init__(
        self,
        link: TaskLink,
        heartbeat_timeout: float,
        progress: Callable[[], dict[str, Any]] = dict,
        on_end: Callable[[Ended], None] = lambda ended: interrupt_main(),
    ) -> None:
        super().__init__(link.repo, link.task_id, interval_for(heartbeat_timeout), on_end)
        self.link, self.progress = link, progress
        self.since = datetime.now(UTC)  # site records older than this run are not its concern

    def check(self) -> TaskOut | Ended | None:
        try:
            answer = self.link.heartbeat(**self.progress())
        except Conflict:  # finished: read how
            return self.repo.get_task(self.task_id)
        except Forbidden as exc:  # silent past its heartbeat_timeout, this collector's claim went to another
            return Ended("Running", CLAIM_LOST, str(exc.detail or exc))
        failed = failed_site(answer, self.since)
        if failed is None:
            return None
        # A site that cannot take part says so in its own record; the task is this collector's to fail.
        try:
            return self.repo.update_task_status(self.task_id, phase="Failed", active=0, **failed)
        except Conflict:
            return self.repo.get_task(self.task_id)


class TaskWatch(_Watcher):
    """A local execution's look at its task: a read held until the task ends (WAIT_END_SECONDS at
    most), then the next one; never two starting less than `interval` seconds apart (a service that
    answers at once is polled at that pace)."""

    def __init__(
        self,
        repo: RepositoryClient,
        task_id: str,
        interval: float = MAX_INTERVAL,
        on_end: Callable[[Ended], None] = lambda ended: interrupt_main(),
        wait: float = WAIT_END_SECONDS,
    ) -> None:
        super().__init__(repo, task_id, interval, on_end)
        self.wait = wait

    def pause(self, asked: float) -> float:
        return max(0.0, self.interval - (time.monotonic() - asked))

    def check(self) -> TaskOut | None:
        return self.repo.get_task(self.task_id, history=0, wait_end=self.wait or None)

    def stop(self) -> None:
        """Stop watching at once: `on_end` is not called after this returns; a held read still in
        flight ends on its own (the thread is a daemon), nobody waits for it."""
        with self.ending:
            self.stopped.set()
