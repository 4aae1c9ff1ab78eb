"""Knowing when a task ends while a collector or a local execution is busy with it: the one
home of "has the task ended" (`ended`, `ended_of`) and of the watchers built on it.

The collector's `Heartbeat` reports to the task a quarter of its `heartbeat_timeout` apart (the
service marks a Running task whose collector stopped reporting Failed, reason CollectorLost, after
that timeout) and reads it every few seconds in between. An end it reads, or a report refused with
409, means the task ended without the collector — cancelled, failed by a site, or given up by the
service — and the collector stops; a report refused with 403, that another collector has claimed
the task, and this one stops too. A site that reports it cannot take part (its own record) makes
the collector fail the task with the site's reason. A local execution's `TaskWatch` only
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
# Reads the task this often at most: "every few seconds", and well inside any heartbeat_timeout.
MAX_INTERVAL = 5.0
# A collector's held reads of its task last this long at most: a site's failure record is seen within it.
READ_SECONDS = MAX_INTERVAL
# Heartbeats (writes) a quarter of the heartbeat_timeout apart, at most this long apart.
HEARTBEAT_MAX_SECONDS = 30.0
# A change of the collector's progress (participants connected) reaches the task within this.
PROGRESS_SECONDS = 10.0
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
    """Seconds between heartbeats: a quarter of the timeout (a few may be lost), at most HEARTBEAT_MAX_SECONDS."""
    return max(0.5, min(HEARTBEAT_MAX_SECONDS, heartbeat_timeout / 4))


# The signal a watcher stops the main thread with once it armed it (arm_interrupt): not SIGINT, which a
# process started in the background by a script (`flrepo collector ... &`) inherits as ignored, so a
# cancelled task's collector would never stop; and what the user's Ctrl-C does stays as it was.
WAKE_SIGNAL = signal.SIGUSR1
_armed = threading.Event()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def arm_interrupt() -> None:
    """From the main thread: make WAKE_SIGNAL raise KeyboardInterrupt there (elsewhere Python allows no
    handler; interrupt_main then falls back to SIGINT)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(WAKE_SIGNAL, _raise_interrupt)
        _armed.set()


def interrupt_main() -> None:
    """A real signal to the main thread, raising KeyboardInterrupt there: it wakes blocking waits (a
    lock, a gRPC call), where `_thread.interrupt_main` only sets a flag that a blocked thread never checks."""
    signal.pthread_kill(threading.main_thread().ident or 0, WAKE_SIGNAL if _armed.is_set() else signal.SIGINT)


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

    def start(self) -> None:
        arm_interrupt()  # started from the main thread, which on_end interrupts by default
        super().start()

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
    """The collector's sign of life and its look at its task.

    It reads the task with held requests (answered the moment the task ends, else after at most
    READ_SECONDS: a site's failure record is seen within that) and writes a heartbeat only when one
    is due: `interval_for(heartbeat_timeout)` after the task's last status report — its own, or one
    the collector's rounds sent (the ServerApp's, on the Message API: any report of a running task
    is its heartbeat) — or, when `progress()` (connected participants) changed, PROGRESS_SECONDS
    after its last write. A write is the service's costliest request (a locked read-modify-write of
    the task): at 30 sites on 2 cores ~0.4 s of server time each, and one every 5 s was three
    quarters of the repository's writes in a round. The first 409 means the task has ended; a 403,
    that another collector claimed it."""

    def __init__(
        self,
        link: TaskLink,
        heartbeat_timeout: float,
        progress: Callable[[], dict[str, Any]] = dict,
        on_end: Callable[[Ended], None] = lambda ended: interrupt_main(),
        read_seconds: float = READ_SECONDS,
        shown: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(link.repo, link.task_id, interval_for(heartbeat_timeout), on_end)
        self.link, self.progress = link, progress
        self.read_seconds = min(read_seconds, self.interval)
        self.since = datetime.now(UTC)  # site records older than this run are not its concern
        self.reported_at = time.monotonic()  # the collector's Running report has just gone out
        self.written_at = self.reported_at
        # The progress last written: to begin with, what the collector's Running report said
        # (`shown`; flrepo.fl.core.lifecycle.RUNNING_PROGRESS), not written again.
        self.reported: dict[str, Any] | None = shown
        self.stamp: datetime | None = None  # the task's last heartbeat as last seen
        self.writes = 0
        self.writing = threading.Lock()
        self.held = 0.0  # how long the last read asked the service to hold it (0: it was a write)

    def stop(self) -> None:
        """Stop: no write after this returns (one in flight is waited for, so that its answer cannot be
        taken for someone else's end of the task); a held read in flight ends on its own."""
        with self.ending:
            self.stopped.set()
        with self.writing:
            pass

    def pause(self, asked: float) -> float:
        # A held read is its own wait, and a write is followed by one at once (an end is seen the
        # moment it is recorded); a service that answers held reads at once is read at their pace.
        return max(0.0, self.held - (time.monotonic() - asked))

    def due(self, progress: dict[str, Any]) -> float:
        """When the next write is due (time.monotonic())."""
        due = self.reported_at + self.interval
        if progress != self.reported:
            due = min(due, self.written_at + min(PROGRESS_SECONDS, self.interval))
        return due

    def check(self) -> TaskOut | Ended | None:
        answer: TaskOut | None
        progress = self.progress()
        left = self.due(progress) - time.monotonic()
        try:
            if left <= 0:
                self.held = 0.0
                answer = self.write(progress)
            else:
                self.held = min(left, self.read_seconds)
                answer = self.repo.get_task(self.task_id, history=0, wait_end=self.held)
                self.seen(answer)
        except Conflict:  # finished: read how
            return self.repo.get_task(self.task_id)
        except Forbidden as exc:  # silent past its heartbeat_timeout, this collector's claim went to another
            return Ended("Running", CLAIM_LOST, str(exc.detail or exc))
        if answer is None or ended_of(answer) is not None:
            return answer
        failed = failed_site(answer, self.since)
        if failed is None:
            return answer
        # A site that cannot take part says so in its own record; the task is this collector's to fail.
        try:
            with self.writing:
                if self.stopped.is_set():
                    return None
                fields: dict[str, Any] = {"phase": "Failed", "active": 0, **failed}
                return self.repo.update_task_status(self.task_id, **fields)
        except Conflict:
            return self.repo.get_task(self.task_id)

    def write(self, progress: dict[str, Any]) -> TaskOut | None:
        """A heartbeat with `progress`; None once stopped (no write after stop() returned)."""
        with self.writing:
            if self.stopped.is_set():
                return None
            answer = self.link.heartbeat(**progress)
        self.writes += 1
        self.written_at = self.reported_at = time.monotonic()
        self.reported = progress
        self.stamp = answer.heartbeat.time if answer.heartbeat else None
        return answer

    def seen(self, task: TaskOut) -> None:
        """A read: a status report since the last one (a round's) was a heartbeat too."""
        stamp = task.heartbeat.time if task.heartbeat else None
        if stamp is not None and stamp != self.stamp:
            if self.stamp is not None:
                self.reported_at = time.monotonic()
            self.stamp = stamp


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
