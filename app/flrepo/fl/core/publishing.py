"""What a collector does after its last round, on either Flower runtime: choose the weights to
publish (last or best round), store the aerOS training result (results + .npz weights), register
the trained model as a new version in its native format, and undo all of it when the task fails
at the end."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flrepo.client import Conflict, NotFound, RepositoryClient, RepositoryError
from flrepo.fl.core.link import TaskLink
from flrepo.fl.core.resume import checkpoint_weights
from flrepo.fl.frameworks import LocalModel, ModelError, Weights
from flrepo.fl.weights import to_npz
from flrepo.schemas.tasks import output_version

log = logging.getLogger(__name__)
# What a published version's meta says about how it was made (`lineage` and publish_model).
LINEAGE_KEYS = ("task_id", "trained_from", "rounds", "strategy", "published_round", "final_loss", "final_metrics")


def published_weights(repo: RepositoryClient, task: dict[str, Any], last: Weights) -> tuple[Weights, int]:
    """The weights to publish and their round: the last round's, or the best checkpoint's."""
    best = task.get("best")
    if task.get("publish") == "best" and best:
        return checkpoint_weights(repo, task["task_id"], int(best["round"])), int(best["round"])
    return last, int(task["rounds"])


def store_result(
    repo: RepositoryClient,
    task: dict[str, Any],
    last_loss: float | None,
    last_metrics: dict[str, Any],
    final: Weights,
    chosen: int,
    figures: Mapping[str, Any] | None = None,
    privacy: dict[str, Any] | None = None,
) -> None:
    """The aerOS training result: results (the figures of the run, with the runtime's `figures`, the
    privacy guarantee as flat `privacy_*` values: aerOS results hold scalars) and the .npz weights."""
    name, version = task["model"]["model_name"], task["model"]["model_version"]
    results: dict[str, Any] = {
        "rounds": int(task["rounds"]),
        "final_loss": last_loss,
        **{k: v for k, v in last_metrics.items() if isinstance(v, int | float | str | bool)},
        "strategy": task["strategy"]["strategy_name"],
        **{f"conf_{k}": v for k, v in (task.get("strategy_conf") or {}).items() if isinstance(v, int | float | str)},
        "output_model_version": output_version(task),
        "published_round": chosen,
        "best_round": (task.get("best") or {}).get("round"),
        "min_participants": task.get("min_participants"),
        "participants_ratio": task.get("participants_ratio"),
        "runtime": task.get("runtime"),
        **(figures or {}),
        **{f"privacy_{k}": (privacy or {}).get(k) for k in ("mechanism", "epsilon", "delta", "rounds")},
    }
    results = {k: v for k, v in results.items() if v is not None}
    task_id = task["task_id"]
    try:
        repo.create_training_result(name, version, task_id, results, task["configuration_id"])
    except Conflict:  # a collector that died after writing it: this run's figures replace it
        repo.delete_training_result(name, version, task_id)
        repo.create_training_result(name, version, task_id, results, task["configuration_id"])
    repo.upload_weights(
        name, version, task_id, task["configuration_id"], io.BytesIO(to_npz(final)), filename="weights.npz"
    )


def lineage(task: dict[str, Any], chosen: int, last_loss: float | None, last_metrics: dict[str, Any]) -> dict[str, Any]:
    """What a published version says about how it was made, beside `task_id`, `trained_from` and `rounds`:
    the strategy, the round published, and that round's loss and metrics (the best round's, when it was
    chosen), so a reader of the model (the web console) need not look the task up."""
    best = task.get("best") or {}
    if best and int(best.get("round", 0)) == chosen and chosen != int(task["rounds"]):
        loss, metrics = best.get("loss"), best.get("metrics") or {}
    else:
        loss, metrics = last_loss, last_metrics
    figures = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}
    found = {"strategy": task["strategy"]["strategy_name"], "published_round": chosen, "final_loss": loss}
    return {**{k: v for k, v in found.items() if v is not None}, "final_metrics": figures}


def publish_model(
    repo: RepositoryClient,
    task: dict[str, Any],
    model: LocalModel,
    final: Weights,
    workdir: Path,
    made: dict[str, Any] | None = None,
    privacy: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Register the trained model as `output_model_version` with its native file; `made` (its `lineage`)
    goes into its meta beside the task and the version it was trained from."""
    name, version = task["model"]["model_name"], output_version(task)
    source = repo.get_model(task["model"]["model_name"], task["model"]["model_version"])
    source_meta = source.meta or {}  # aerOS-era models may have `meta: null`
    # The source's own lineage (when it was trained too) is not this version's.
    meta = {k: v for k, v in source_meta.items() if k not in ("library", "signature", *LINEAGE_KEYS)}
    meta.update(trained_from=task["model"]["model_version"], task_id=task["task_id"], rounds=int(task["rounds"]))
    meta.update(made or {})
    meta.pop("privacy", None)  # the source model's guarantee is not this training's
    if privacy is not None:
        meta["privacy"] = privacy  # what the model promises, for whoever reads the repository
    try:
        repo.create_model(name, version, source_meta.get("library", model.library), **meta)
    except Conflict:
        existing = repo.get_model(name, version)
        if (existing.meta or {}).get("task_id") != task["task_id"]:  # someone else's model: never replace it
            raise ModelError(f"model {name}/{version} exists and was not trained by this task") from None
    model.set_weights(final)
    path = workdir / f"trained{model.suffix}"
    model.save(path)
    repo.upload_model(name, version, path, filename=f"{name}-{version}{model.suffix}")
    return name, version


@dataclass
class Written:
    """What `finish` registered, so that `undo` can remove it."""

    result: bool = False
    models: list[tuple[str, str]] = field(default_factory=list)


def undo(link: TaskLink, task: dict[str, Any], written: Written) -> None:
    """Nothing half-written is presented as a result of a failed task."""
    repo, task_id = link.repo, task["task_id"]
    try:
        if written.result:
            repo.delete_training_result(task["model"]["model_name"], task["model"]["model_version"], task_id)
        for name, version in written.models:
            repo.delete_model(name, version)
    except (RepositoryError, NotFound) as exc:
        log.warning("could not remove what the failed task %s wrote: %s", task_id, exc)


def finish(
    link: TaskLink,
    model: LocalModel,
    final: Weights,
    last_loss: float | None,
    last_metrics: dict[str, Any],
    workdir: Path,
    written: Written,
    figures: Mapping[str, Any] | None = None,
    privacy: dict[str, Any] | None = None,
    last_round: Mapping[str, Any] | None = None,
) -> None:
    """Publish the result (with the runtime's `figures` of the run) and the trained model (with the
    privacy guarantee it was trained under, flrepo.fl.privacy_accounting), then mark the task Succeeded,
    in one report with `last_round`, the newest round's report when the rounds' writes kept it for this
    one (flrepo.fl.core.round_writes: its checkpoint is written already)."""
    repo = link.repo
    task = repo.get_task(link.task_id, history=0).model_dump()  # with the best round the checkpoints set
    final, chosen = published_weights(repo, task, final)
    store_result(repo, task, last_loss, last_metrics, final, chosen, figures, privacy)
    written.result = True
    made = lineage(task, chosen, last_loss, last_metrics)
    written.models.append(publish_model(repo, task, model, final, workdir, made, privacy))
    end = {
        "phase": "Succeeded",
        "reason": "TrainingComplete",
        "message": f"{task['rounds']} rounds; published round {chosen} ({task['publish']}) as "
        f"{task['model']['model_name']}/{output_version(task)}",
        "result": {**task["model"], "training_id": link.task_id, "output_model_version": output_version(task)},
        "active": 0,
    }
    link.report(**{**(last_round or {}), **end})
