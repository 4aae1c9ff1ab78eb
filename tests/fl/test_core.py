"""The runtime-neutral FL core, one piece at a time, against a real repository (no Flower running):
the task's start, the exit code, failing a task (collector and site), the resume point, the
end-of-task watch, discovery and the reconnect loop, and the site trainer."""

from __future__ import annotations

import io
import socket
import threading

import numpy as np
import pytest

from flrepo.fl.core.discovery import Connection, DiscoveryTimeout, Site, discover
from flrepo.fl.core.lifecycle import RUNNING_PROGRESS, exit_code, fail, fail_site, mark_failed, started
from flrepo.fl.core.link import IDENTITY, TaskLink
from flrepo.fl.core.publishing import Written
from flrepo.fl.core.reconnect import stay
from flrepo.fl.core.resume import Resume, checkpoint_weights, resume_point, resume_round
from flrepo.fl.core.trainer import SiteTrainer
from flrepo.fl.core.watch import Ended, Heartbeat, TaskWatch, ended
from flrepo.fl.demo import digits_task, register_model
from flrepo.fl.frameworks import Training
from flrepo.fl.frameworks.numpy_model import NumpyModel
from flrepo.fl.weights import to_npz
from flrepo.schemas.tasks import CANCELLED
from tests.helpers import last_condition, wait_for


def _task(fl, tmp_path, task_id: str, running: bool = True) -> dict:
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    fl.repo.create_task(digits_task(task_id, rounds=3, clients=1))
    task = fl.repo.get_task(task_id).model_dump()
    if running:
        started(TaskLink(fl.repo, task_id), task, None, None, "legacy", "127.0.0.1:9", None)
        task = fl.repo.get_task(task_id).model_dump()
    return task


def _checkpoint(fl, task_id: str, round_: int, weights: list[np.ndarray] | None) -> None:
    fl.repo.create_checkpoint(task_id, round_, loss=1.0 / round_, metrics={})
    if weights is not None:
        fl.repo.upload_checkpoint(task_id, round_, io.BytesIO(to_npz(weights)), filename=f"round-{round_}.npz")


# --- exit code --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "reason", "code"),
    [("Succeeded", "TrainingComplete", 0), ("Failed", CANCELLED, 0), ("Failed", "CollectorLost", 1)],
)
def test_the_exit_code_is_0_for_success_or_cancel_and_1_for_failure(phase, reason, code):
    assert exit_code(Ended(phase, reason, "")) == code


# --- start and discovery ------------------------------------------------------------------------


def test_started_publishes_what_a_site_discovers(fl, tmp_path):
    task = _task(fl, tmp_path, "start")
    assert task["phase"] == "Running" and task["runtime"] == "legacy"
    assert last_condition(fl.repo.get_task("start").model_dump(mode="json"))[0] == "ServerStarted"
    found = discover(fl.repo, "start", Site(wait=5))
    assert found == Connection("legacy", "127.0.0.1:9", None)
    # A site's own address and CA win over the published ones.
    assert discover(fl.repo, "start", Site(server="tunnel:1", root_certificates=b"CA")) == Connection(
        "legacy", "tunnel:1", b"CA"
    )


def test_discovery_is_bounded_and_sees_an_ended_task(fl, tmp_path):
    _task(fl, tmp_path, "pending", running=False)
    with pytest.raises(DiscoveryTimeout, match=r"no training collector published its address within 0\.2 s"):
        discover(fl.repo, "pending", Site(wait=0.2), poll=0.05)
    fl.repo.cancel_task("pending", "not today")
    found = discover(fl.repo, "pending", Site(wait=5))
    assert isinstance(found, Ended) and found.cancelled


# --- the collector's line to its task ---------------------------------------------------------


def test_the_task_link_reports_heartbeats_and_checkpoints(fl, tmp_path):
    _task(fl, tmp_path, "link")
    link = TaskLink(fl.repo, "link")
    link.heartbeat(current_round=1, active=2)
    now = fl.repo.get_task("link").model_dump(mode="json")
    assert now["heartbeat"]["collector"] == IDENTITY and now["current_round"] == 1 and now["active"] == 2
    link.checkpoint(1, 0.5, {"accuracy": 0.9}, [np.ones(3)])
    assert checkpoint_weights(fl.repo, "link", 1)[0].tolist() == [1.0, 1.0, 1.0]
    link.report(phase="Failed", reason="Test", message="done")
    assert last_condition(fl.repo.get_task("link").model_dump(mode="json")) == ("Test", "done")


# --- resume -------------------------------------------------------------------------------------


def test_resume_starts_after_the_newest_checkpoint_that_has_its_file(fl, tmp_path):
    task = _task(fl, tmp_path, "resume")
    assert resume_round(fl.repo, task) == 0 and resume_point(fl.repo, task) is None
    first, second = [np.full((2, 2), 1.0)], [np.full((2, 2), 2.0), np.arange(3.0)]
    _checkpoint(fl, "resume", 1, first)
    _checkpoint(fl, "resume", 2, second)
    _checkpoint(fl, "resume", 3, None)  # its collector died before the file was in
    assert resume_round(fl.repo, task) == 2
    point = resume_point(fl.repo, task)
    assert isinstance(point, Resume) and point.round == 2
    assert [a.tolist() for a in point.weights] == [a.tolist() for a in second]
    assert checkpoint_weights(fl.repo, "resume", 1)[0].tolist() == first[0].tolist()


def test_a_task_that_starts_now_never_resumes(fl, tmp_path):
    task = _task(fl, tmp_path, "fresh")
    _checkpoint(fl, "fresh", 1, [np.zeros(2)])
    assert resume_round(fl.repo, {**task, "phase": "Pending"}) == 0


# --- fail ---------------------------------------------------------------------------------------


def test_a_collector_failure_marks_the_task_failed_with_the_class_as_reason(fl, tmp_path):
    task = _task(fl, tmp_path, "boom")
    assert fail(TaskLink(fl.repo, "boom"), task, ValueError("bad weights"), Written()) == 1
    now = fl.repo.get_task("boom").model_dump(mode="json")
    assert now["phase"] == "Failed" and last_condition(now) == ("ValueError", "bad weights")


def test_a_site_failure_names_the_site(fl, tmp_path):
    _task(fl, tmp_path, "site")
    fail_site(fl.repo, "site", RuntimeError("no data"))
    now = fl.repo.get_task("site").model_dump(mode="json")
    assert now["phase"] == "Failed"
    assert last_condition(now) == ("RuntimeError", f"local execution on {socket.gethostname()}: no data")


def test_failing_an_ended_task_leaves_it_as_it_ended(fl, tmp_path):
    task = _task(fl, tmp_path, "gone")
    fl.repo.cancel_task("gone", "enough")
    end = mark_failed(TaskLink(fl.repo, "gone"), ValueError("late"))
    assert end is not None and end.cancelled
    assert fail(TaskLink(fl.repo, "gone"), task, ValueError("late"), Written()) == 0  # cancelled: the collector exits 0
    assert last_condition(fl.repo.get_task("gone").model_dump(mode="json"))[0] == CANCELLED


# --- end-of-task watch --------------------------------------------------------------------------


def test_ended_says_how_a_task_ended(fl, tmp_path):
    _task(fl, tmp_path, "watch")
    assert ended(fl.repo, "watch") is None
    fl.repo.cancel_task("watch", "stop it")
    end = ended(fl.repo, "watch")
    assert end is not None and end.cancelled and end.message.endswith("stop it")


@pytest.mark.parametrize("watcher", ["TaskWatch", "Heartbeat"])
def test_the_watchers_call_on_end_once_the_task_ends(fl, tmp_path, watcher):
    _task(fl, tmp_path, "w")
    seen: list[Ended] = []
    called = threading.Event()

    def on_end(end: Ended) -> None:
        seen.append(end)
        called.set()

    if watcher == "TaskWatch":
        watch: TaskWatch | Heartbeat = TaskWatch(fl.repo, "w", interval=0.1, on_end=on_end)
    else:
        watch = Heartbeat(TaskLink(fl.repo, "w"), heartbeat_timeout=2.0, progress=lambda: {"active": 1}, on_end=on_end)
    watch.start()
    try:
        if watcher == "Heartbeat":  # its reports reach the task while it runs
            wait_for(lambda: fl.repo.get_task("w").heartbeat, 60, "a heartbeat")
        fl.repo.cancel_task("w", "enough")
        assert called.wait(60), "the watcher did not see the task end"
    finally:
        watch.stop()
    assert len(seen) == 1 and seen[0].cancelled and watch.ended == seen[0]


def test_a_heartbeat_is_written_only_when_no_report_came_within_its_interval_or_progress_changed(fl, tmp_path):
    # Driven by hand (the thread not started), its clock moved back instead of waited for.
    _task(fl, tmp_path, "beat")
    link = TaskLink(fl.repo, "beat")
    shown = {"active": 2}
    beat = Heartbeat(link, heartbeat_timeout=40.0, progress=lambda: dict(shown), read_seconds=0.05)
    assert beat.interval == 10.0

    def later(seconds: float, written: bool = True) -> None:
        beat.reported_at -= seconds
        if written:
            beat.written_at -= seconds

    before = fl.repo.get_task("beat").heartbeat
    assert beat.check() is not None and beat.writes == 0  # nothing due yet: a read
    later(10.5)  # the progress is new, and the Running report is an interval old
    beat.check()
    assert beat.writes == 1
    after = fl.repo.get_task("beat")
    assert after.active == 2 and after.heartbeat is not None and after.heartbeat != before
    assert after.heartbeat.collector == IDENTITY

    later(5)
    link.report(current_round=1)  # a round's report (the ServerApp's, say) is a heartbeat too
    beat.check()  # the read that sees it
    later(6, written=False)  # 11 s after this heartbeat, 6 s after the round's report: not due
    beat.check()
    assert beat.writes == 1
    later(5, written=False)  # 11 s after the round's report: due
    beat.check()
    assert beat.writes == 2

    shown["active"] = 3  # a participant joined: written PROGRESS_SECONDS after the last write
    beat.check()
    assert beat.writes == 2
    later(10.5)
    beat.check()
    assert beat.writes == 3 and fl.repo.get_task("beat").active == 3


def test_a_heartbeat_does_not_write_again_the_progress_the_running_report_showed(fl, tmp_path):
    _task(fl, tmp_path, "quiet")  # its Running report says RUNNING_PROGRESS
    shown = dict(RUNNING_PROGRESS)
    beat = Heartbeat(TaskLink(fl.repo, "quiet"), 40.0, lambda: dict(shown), read_seconds=0.05, shown=RUNNING_PROGRESS)
    beat.written_at -= 10.5  # PROGRESS_SECONDS after the Running report: a change would be due
    beat.check()
    assert beat.writes == 0
    shown["active"] = 1  # a site joined: that is written
    beat.check()
    assert beat.writes == 1 and fl.repo.get_task("quiet").active == 1


def test_a_heartbeat_reads_a_sites_failure_and_fails_the_task_with_its_reason(fl, tmp_path):
    _task(fl, tmp_path, "siteless")
    seen: list[Ended] = []
    called = threading.Event()

    def on_end(end: Ended) -> None:
        seen.append(end)
        called.set()

    # A long interval: the failure comes through its reads, not its writes.
    beat = Heartbeat(TaskLink(fl.repo, "siteless"), heartbeat_timeout=600.0, on_end=on_end, read_seconds=0.2)
    beat.start()
    try:
        fl.repo.report_site("siteless", "site-a", "failed", reason="DataError", message="no labels")
        assert called.wait(60), "the heartbeat did not fail the task"
    finally:
        beat.stop()
    assert seen[0].phase == "Failed" and seen[0].reason == "DataError" and "no labels" in seen[0].message
    assert beat.writes == 0
    assert fl.repo.get_task("siteless").phase == "Failed"


# --- reconnect ----------------------------------------------------------------------------------


def test_the_reconnect_loop_tries_again_while_the_task_runs(fl, tmp_path):
    _task(fl, tmp_path, "again")
    codes = iter([None, None, 0])
    tries: list[int] = []

    def attempt() -> int | None:
        tries.append(1)
        return next(codes)

    assert stay(fl.repo, "again", attempt, seconds=60, pause=0) == 0
    assert len(tries) == 3


def test_the_reconnect_loop_gives_up_after_its_bound(fl, tmp_path):
    _task(fl, tmp_path, "never")
    tries: list[int] = []
    assert stay(fl.repo, "never", lambda: tries.append(1), seconds=0.3, pause=0.05) == 1
    assert len(tries) >= 2


@pytest.mark.parametrize(("how", "code"), [("cancel", 0), ("fail", 1)])
def test_the_reconnect_loop_stops_when_the_task_ends(fl, tmp_path, how, code):
    _task(fl, tmp_path, "end")
    tries: list[int] = []

    def attempt() -> int | None:
        tries.append(1)
        if how == "cancel":
            fl.repo.cancel_task("end", "enough")
        else:
            fl.repo.update_task_status("end", phase="Failed", reason="SiteLost", message="gone")
        return None

    assert stay(fl.repo, "end", attempt, seconds=60, pause=0) == code
    assert len(tries) == 1


# --- the site trainer ---------------------------------------------------------------------------


def test_the_site_trainer_fits_and_evaluates_on_its_split():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), np.arange(50) % 3
    model = NumpyModel.initial(4, 3)
    training = Training.from_config({"epochs": 1, "batch_size": 8, "learning_rate": 0.1})
    trainer = SiteTrainer.split(model, x, y, training, seed=5)
    assert len(trainer.y_train) == 40 and len(trainer.y_val) == 10
    start = trainer.weights()
    weights, samples, metrics = trainer.fit(start, {"server_round": 2})
    assert samples == 40 and any(not np.array_equal(a, b) for a, b in zip(weights, start, strict=True))
    assert isinstance(metrics, dict)
    loss, samples, _ = trainer.evaluate(weights, {})
    assert samples == 10 and np.isfinite(loss)
    assert trainer.settings({"server_round": 3}).seed == 8  # the site's seed moves with the round
