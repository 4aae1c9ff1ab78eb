"""A process's line to its task: every write a collector (or a site failing the task) makes to the
task goes through a `TaskLink` — status reports, heartbeats, checkpoints and the end of the task —
so what a write carries (a task-scoped credential, say) has one place to be added. Publishing the
trained model (flrepo.fl.core.publishing) uses its repository client.

The collector makes its link once per run (flrepo.fl.collector), the Message-API ServerApp, which
runs in its own process, once more (flrepo.fl.message.server). Reads (has the task ended, its
checkpoints) go to the repository directly."""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from flrepo.client import NotFound, RepositoryClient
from flrepo.fl.frameworks import Weights
from flrepo.fl.weights import to_npz
from flrepo.schemas.tasks import TaskOut

# Who reports: shown in the task's heartbeat and in CollectorLost messages.
IDENTITY = f"{socket.gethostname()}:{os.getpid()}"


class Timing:
    """How long the last status report took (seconds; 0 before the first): what the first round's
    write is expected to cost (flrepo.fl.core.round_writes), shared by the links of one process."""

    def __init__(self) -> None:
        self.report_s = 0.0


class TaskLink:
    """Writes to one task."""

    def __init__(self, repo: RepositoryClient, task_id: str, timing: Timing | None = None) -> None:
        self.repo, self.task_id = repo, task_id
        self.timing = timing or Timing()

    def report(self, **fields: Any) -> None:
        """A status report (phase, conditions, rounds, participants, ...); while the task runs, the
        service takes it for a heartbeat too, so it says who sends it."""
        self._status(fields)

    def _status(self, fields: Mapping[str, Any]) -> TaskOut:
        """`fields` as this collector's status report, timed (`timing`); the task as it left it."""
        started = time.monotonic()
        try:
            # Without round records in the answer: nothing here reads them, and a hundred of them made
            # the answer of every round's report ten times its size (bench/task_reports.py --shown).
            return self.repo.update_task_status(self.task_id, history=0, **{"collector": IDENTITY, **fields})
        finally:
            self.timing.report_s = time.monotonic() - started

    def round_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """A round's record as the history keeps it; called when the round ends, not when its report is
        sent (reports go out in the background, flrepo.fl.core.reporting.Sender)."""
        return record

    def heartbeat(self, **progress: Any) -> TaskOut:
        """This collector is alive, with its progress (Conflict once the task has ended); the task as
        the report left it."""
        return self._status(progress)

    def checkpoint(self, round_: int, loss: float | None, metrics: Mapping[str, Any], weights: Weights) -> None:
        """A round's aggregated weights, with its loss and metrics: registered by their upload, one request
        (a service from before `register=true` answers 404: then registered first, as it expects)."""
        data, name = to_npz(weights), f"round-{round_}.npz"
        try:
            self.repo.upload_checkpoint(
                self.task_id, round_, io.BytesIO(data), register=True, loss=loss, metrics=dict(metrics), filename=name
            )
            return
        except NotFound:
            pass
        self.repo.create_checkpoint(self.task_id, round_, loss=loss, metrics=dict(metrics))
        self.repo.upload_checkpoint(self.task_id, round_, io.BytesIO(data), filename=name)
