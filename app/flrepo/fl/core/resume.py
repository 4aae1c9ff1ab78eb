"""Where a collector started again for a Running task picks up: the one home of the resume point
(the newest checkpoint that has its file) and of loading a checkpoint's weights."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from flrepo.client import RepositoryClient
from flrepo.fl.frameworks import Weights
from flrepo.fl.weights import from_npz


@dataclass
class Resume:
    """Where a restarted collector picks up: after `round`, from those weights."""

    round: int
    weights: Weights


def resume_round(repo: RepositoryClient, task: dict[str, Any]) -> int:
    """The last round a checkpoint holds (its file uploaded) of a task that is Running already;
    0 for a task that starts now."""
    if task["phase"] != "Running":
        return 0
    filed = [c.round for c in repo.list_checkpoints(task["task_id"]) if c.size is not None]
    return max(filed, default=0)


def checkpoint_weights(repo: RepositoryClient, task_id: str, round_: int) -> Weights:
    """The weights a round's checkpoint holds."""
    buffer = io.BytesIO()
    repo.download_checkpoint(task_id, round_, buffer)
    return from_npz(buffer.getvalue())


def resume_point(repo: RepositoryClient, task: dict[str, Any]) -> Resume | None:
    """The round and weights to resume from, or None when the task starts from its model."""
    done = resume_round(repo, task)
    return Resume(done, checkpoint_weights(repo, task["task_id"], done)) if done else None
