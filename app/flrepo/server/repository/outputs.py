"""What a task will publish is reserved when the task is created: the trained model's version
(`{model}/{output version}`) and the aerOS training result named by the task id. While the task has not
failed, only the collector that claimed it (its task token) or an admin may create or change them, so no
writer can plant a model or result under the name the collector will publish to."""

from __future__ import annotations

from typing import Any

from flrepo.schemas.tasks import Phase
from flrepo.server.repository import claims
from flrepo.server.repository.claims import Actor
from flrepo.server.repository.kinds import TASKS
from flrepo.server.storage.db import Database

_NOT_FAILED = {"$ne": Phase.FAILED.value}
_PROJECTION = {"_id": 0, "history": 0}


async def reserving_model(db: Database, model_name: str, model_version: str) -> dict[str, Any] | None:
    """The task (not Failed) whose trained model will be `model_name`/`model_version`, if any."""
    query = {"output.model_name": model_name, "output.model_version": model_version, "phase": _NOT_FAILED}
    found = await db.collection(TASKS.collection).find_one(query, _PROJECTION)
    return dict(found) if found else None


async def check_model(db: Database, model_name: str, model_version: str, actor: Actor) -> None:
    """Forbidden when the model version is a task's reserved output and `actor` is not its collector."""
    task = await reserving_model(db, model_name, model_version)
    if task is not None:
        claims.check(task, actor)


async def check_result(db: Database, model_name: str, model_version: str, training_id: str, actor: Actor) -> None:
    """Forbidden when the training result is the one a task (not Failed) will publish and `actor` is not
    its collector (the collector's results are named by the task id, on the task's model)."""
    query = {
        "task_id": training_id,
        "model.model_name": model_name,
        "model.model_version": model_version,
        "phase": _NOT_FAILED,
        "output": {"$ne": None},
    }
    task = await db.collection(TASKS.collection).find_one(query, _PROJECTION)
    if task is not None:
        claims.check(dict(task), actor)
