"""The training collector: a Flower server that runs one repository task and reports every round.

It reads the task, loads the signed strategy and the task's model (the client its `meta.library`
names), applies the task's explicit settings, runs the rounds with Flower's legacy `start_server`
(which must own the main thread; the aerOS-compatible path), checkpoints the aggregated weights
after every round, and on success publishes the trained model as a new version of the task's
model in its native format, beside the aerOS training result (results + .npz weights).

A collector started again for a task whose collector died resumes after the last checkpoint: the
completed rounds are not repeated and the round count stays the configured one.
"""

from __future__ import annotations

import _thread
import io
import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flwr
from flwr.server.strategy import Strategy

from flrepo.client import Conflict, NotFound, RepositoryClient, RepositoryError
from flrepo.fl import pinning, strategy_setup
from flrepo.fl.frameworks import LocalModel, ModelError, Weights
from flrepo.fl.reporting import ReportingStrategy
from flrepo.fl.task_model import fetch_model, training_settings
from flrepo.fl.weights import from_npz, to_npz
from flrepo.schemas.tasks import TERMINAL, output_version

log = logging.getLogger(__name__)
# How often the collector looks whether its task was ended by someone else (a local execution
# reporting unusable data, an operator).
WATCH_SECONDS = 5.0


@dataclass
class Resume:
    """Where a restarted collector picks up: after `round`, from those weights."""

    round: int
    weights: Weights


def last_checkpoint(repo: RepositoryClient, task_id: str) -> Resume | None:
    """The newest checkpoint with its file, or None."""
    filed = [c for c in repo.list_checkpoints(task_id) if c.size is not None]
    if not filed:
        return None
    newest = max(filed, key=lambda c: c.round)
    buffer = io.BytesIO()
    repo.download_checkpoint(task_id, newest.round, buffer)
    return Resume(newest.round, from_npz(buffer.getvalue()))


class TaskWatch(threading.Thread):
    """Interrupts the main thread (and so Flower's server) when the task ends without us."""

    def __init__(self, repo: RepositoryClient, task_id: str) -> None:
        super().__init__(daemon=True, name="task-watch")
        self.repo, self.task_id = repo, task_id
        self.stop = threading.Event()
        self.ended_by_others: str | None = None

    def run(self) -> None:
        while not self.stop.wait(WATCH_SECONDS):
            try:
                task = self.repo.get_task(self.task_id)
            except RepositoryError as exc:
                log.warning("could not read task %s: %s", self.task_id, exc)
                continue
            if task.phase in TERMINAL and not self.stop.is_set():
                last = task.conditions[-1] if task.conditions else None
                why = f"{last.reason}: {last.message or ''}" if last else "no reason given"
                self.ended_by_others = f"{task.phase} ({why})"
                _thread.interrupt_main()
                return


def run(repo: RepositoryClient, task_id: str, address: str, allow_unsigned: bool = False) -> int:
    """Run the task to its end; 0 when it Succeeded, 1 when it Failed (the task says why)."""
    task = repo.get_task(task_id).model_dump()
    if task["phase"] in TERMINAL:
        log.error("task %s is %s already; nothing to run", task_id, task["phase"])
        return 1
    watch = TaskWatch(repo, task_id)
    published: list[tuple[str, str]] = []
    result_created = False
    try:
        with tempfile.TemporaryDirectory(prefix="flrepo-collector-") as tmp:
            strategy = pinning.load_strategy(repo, task, allow_unsigned)  # the pinned version, signature checked
            if not isinstance(strategy, Strategy):
                raise TypeError(f"strategy {task['strategy']['strategy_name']!r} is a {type(strategy).__name__}")
            model = fetch_model(repo, task, Path(tmp), allow_unsigned)
            training = training_settings(task)
            model.check(training)
            resume = last_checkpoint(repo, task_id) if task["phase"] == "Running" else None
            settings = strategy_setup.configure(strategy, task, model, resume.weights if resume else None)
            done = resume.round if resume else 0
            reporting = ReportingStrategy(strategy, repo, task_id, training.as_config(), round_offset=done)
            _start(repo, task, address, settings, resume)
            watch.start()
            remaining = int(task["rounds"]) - done
            if remaining > 0:
                flwr.server.start_server(
                    server_address=address,
                    config=flwr.server.ServerConfig(num_rounds=remaining, round_timeout=task.get("round_timeout")),
                    strategy=reporting,
                )
            watch.stop.set()
            final, rounds_done = reporting.latest_weights(), done + reporting.rounds_done
            if final is None and resume is not None and remaining <= 0:
                final, rounds_done = resume.weights, done  # every round was done before the restart
            if final is None or rounds_done < int(task["rounds"]):
                raise RuntimeError(
                    f"training stopped after {rounds_done} of {task['rounds']} rounds without final weights"
                )
            task = repo.get_task(task_id).model_dump()  # with the best round the checkpoints set
            final, chosen = _published_weights(repo, task, final)
            result_created = _store_result(repo, task, reporting, final, chosen)
            published.append(_publish_model(repo, task, model, final, Path(tmp)))
            repo.update_task_status(
                task_id,
                phase="Succeeded",
                reason="TrainingComplete",
                message=f"{task['rounds']} rounds; published round {chosen} ({task['publish']}) as "
                f"{task['model']['model_name']}/{output_version(task)}",
                result={**task["model"], "training_id": task_id, "output_model_version": output_version(task)},
            )
            return 0
    except KeyboardInterrupt:
        if watch.ended_by_others is None:
            raise
        log.error("task %s was ended while it ran (%s); stopping", task_id, watch.ended_by_others.strip())
        return 1
    except Exception as exc:
        watch.stop.set()
        log.exception("task %s failed", task_id)
        _undo(repo, task, task_id, result_created, published)
        try:
            repo.update_task_status(task_id, phase="Failed", reason=type(exc).__name__, message=str(exc)[:2000])
        except RepositoryError as report_error:
            log.error("could not mark task %s Failed: %s", task_id, report_error)
        return 1
    finally:
        watch.stop.set()


def _start(
    repo: RepositoryClient, task: dict[str, Any], address: str, settings: dict[str, Any], resume: Resume | None
) -> None:
    fields: dict[str, Any] = {"phase": "Running", "strategy_settings": settings}
    if resume:
        fields.update(
            reason="Resumed",
            message=f"Flower server on {address}; resumed after round {resume.round} (its checkpoint)",
            resumed_from_round=resume.round,
        )
    else:
        fields.update(reason="ServerStarted", message=f"Flower server on {address}")
    repo.update_task_status(task["task_id"], **fields)


def _published_weights(repo: RepositoryClient, task: dict[str, Any], last: Weights) -> tuple[Weights, int]:
    """The weights to publish and their round: the last round's, or the best checkpoint's."""
    best = task.get("best")
    if task.get("publish") == "best" and best:
        buffer = io.BytesIO()
        repo.download_checkpoint(task["task_id"], best["round"], buffer)
        return from_npz(buffer.getvalue()), int(best["round"])
    return last, int(task["rounds"])


def _store_result(
    repo: RepositoryClient, task: dict[str, Any], reporting: ReportingStrategy, final: Weights, chosen: int
) -> bool:
    """The aerOS training result: results (the figures of the run) and the .npz weights."""
    name, version = task["model"]["model_name"], task["model"]["model_version"]
    results: dict[str, Any] = {
        "rounds": int(task["rounds"]),
        "final_loss": reporting.last_loss,
        **{k: v for k, v in reporting.last_metrics.items() if isinstance(v, int | float | str | bool)},
        "strategy": task["strategy"]["strategy_name"],
        **{f"conf_{k}": v for k, v in (task.get("strategy_conf") or {}).items() if isinstance(v, int | float | str)},
        "output_model_version": output_version(task),
        "published_round": chosen,
        "best_round": (task.get("best") or {}).get("round"),
        "min_participants": task.get("min_participants"),
        "participants_ratio": task.get("participants_ratio"),
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
    return True


def _publish_model(
    repo: RepositoryClient, task: dict[str, Any], model: LocalModel, final: Weights, workdir: Path
) -> tuple[str, str]:
    """Register the trained model as `output_model_version` with its native file."""
    name, version = task["model"]["model_name"], output_version(task)
    source = repo.get_model(task["model"]["model_name"], task["model"]["model_version"])
    source_meta = source.meta or {}  # aerOS-era models may have `meta: null`
    meta = {k: v for k, v in source_meta.items() if k not in ("library", "signature")}
    meta.update(trained_from=task["model"]["model_version"], task_id=task["task_id"], rounds=int(task["rounds"]))
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


def _undo(
    repo: RepositoryClient, task: dict[str, Any], task_id: str, result_created: bool, published: list[tuple[str, str]]
) -> None:
    """Nothing half-written is presented as a result of a failed task."""
    try:
        if result_created:
            repo.delete_training_result(task["model"]["model_name"], task["model"]["model_version"], task_id)
        for name, version in published:
            repo.delete_model(name, version)
    except (RepositoryError, NotFound) as exc:
        log.warning("could not remove what the failed task %s wrote: %s", task_id, exc)
