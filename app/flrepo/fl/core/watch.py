"""Knowing when a task ends while a collector or a local execution is busy with it: the one
home of "has the task ended" (`ended`, `ended_of`) and of the watchers built on it.

The collector's `Heartbeat` reports to the task every few seconds (the service marks a Running task
whose collector stopped reporting Failed, reason CollectorLost, after its `heartbeat_timeout`).
A report refused with 409 means the task ended without the collector — cancelled, failed by a
site, or given up by the service — and the collector stops. A local execution's `TaskWatch` only
reads the task. Both then call `on_end`, by default interrupting the main thread, where Flower's
server or client runs and where a KeyboardInterrupt is the one way to stop it mid-call.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flrepo.client import Conflict, RepositoryClient, RepositoryError
from flrepo.fl.core.link import TaskLink
from flrepo.schemas.tasks import CANCELLED, TERMINAL, TaskOut

log = logging.getLogger(__name__)
# Reports and reads this often at most: "every few seconds", and well inside any heartbeat_timeout.
MAX_INTERVAL = 5.0


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


def ended(repo: RepositoryClient, task_id: str) -> Ended | None:
    """Whether the task has ended now, read from the repository (RepositoryError when it cannot say)."""
    return ended_of(repo.get_task(task_id))


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
        self.ended: Ended | None = None

    def stop(self) -> None:
        """Stop watching (before this process reports the task's end itself); waits for an
        in-flight report so it cannot be mistaken for someone else's."""
        self.stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(30)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                task = self.check()
            except RepositoryError as exc:  # the service may be briefly away; the next try may pass
                log.warning("task %s: %s", self.task_id, exc)
                continue
            end = ended_of(task) if task is not None else None
            if end is not None and not self.stopped.is_set():
                self.ended = end
                level = logging.INFO if self.ended.phase == "Succeeded" else logging.WARNING
                log.log(level, "task %s ended while this process worked on it: %s", self.task_id, self.ended)
                self.on_end(self.ended)
                return

    def check(self) -> TaskOut | None:
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

    def check(self) -> TaskOut | None:
        try:
            self.link.heartbeat(**self.progress())
            return None
        except Conflict:  # finished: read how
            return self.repo.get_task(self.task_id)


class TaskWatch(_Watcher):
    """A local execution's look at its task every few seconds."""

    def __init__(
        self,
        repo: RepositoryClient,
        task_id: str,
        interval: float = MAX_INTERVAL,
        on_end: Callable[[Ended], None] = lambda ended: interrupt_main(),
    ) -> None:
        super().__init__(repo, task_id, interval, on_end)

    def check(self) -> TaskOut | None:
        return self.repo.get_task(self.task_id)
