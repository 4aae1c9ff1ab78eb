"""The collector's round writes off the round's critical path (flrepo.fl.core.reporting): the
Sender keeps their order, lets at most its backlog wait, survives a failed write and flushes; the
RoundReporter's rounds reach the task (checkpoint before record) after the hook returned, a failed
send is logged as before, and a round's duration covers everything since the previous round. And a
local execution's TaskWatch, whose reads the service holds until the task ends, stops at once."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from flrepo.fl.core.lifecycle import started
from flrepo.fl.core.link import TaskLink
from flrepo.fl.core.reporting import RoundReporter, Sender
from flrepo.fl.core.resume import checkpoint_weights, resume_point
from flrepo.fl.core.watch import TaskWatch
from flrepo.fl.demo import digits_task, register_model

BOUND_S = 60.0  # generous upper bound of every wait below


def _running(fl, tmp_path, task_id: str) -> TaskLink:
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    fl.repo.create_task(digits_task(task_id, rounds=3, clients=1))
    link = TaskLink(fl.repo, task_id)
    started(link, fl.repo.get_task(task_id).model_dump(), None, None, "legacy", "127.0.0.1:9", None)
    return link


class GatedLink(TaskLink):
    """The real link, whose status reports wait for `gate` (a slow repository, on demand)."""

    def __init__(self, link: TaskLink) -> None:
        super().__init__(link.repo, link.task_id)
        self.gate = threading.Event()
        self.reporting = threading.Event()

    def report(self, **fields):
        self.reporting.set()
        assert self.gate.wait(BOUND_S)
        super().report(**fields)


# --- Sender -------------------------------------------------------------------------------------


def test_the_sender_keeps_order_and_lets_only_its_backlog_wait():
    sender, done, gate = Sender(backlog=2), [], threading.Event()
    sender.send(lambda: (gate.wait(BOUND_S), done.append(1)))
    sender.send(lambda: done.append(2))  # returns at once: one is being sent, this one waits
    assert done == []
    third = threading.Thread(target=sender.send, args=(lambda: done.append(3),))
    third.start()
    third.join(0.2)
    assert third.is_alive() and done == []  # the backlog is full: the caller waits
    gate.set()
    third.join(BOUND_S)
    assert not third.is_alive()
    assert sender.flush(BOUND_S) and done == [1, 2, 3]
    assert sender.waited_seconds > 0


def test_a_failed_write_is_logged_and_the_next_one_goes_on(caplog):
    sender, done = Sender(), []

    def broken() -> None:
        raise ValueError("no")

    with caplog.at_level(logging.ERROR, logger="flrepo.fl.core.reporting"):
        sender.send(broken)
        sender.send(lambda: done.append("after"))
        assert sender.flush(BOUND_S)
    assert done == ["after"] and "a write to the repository failed" in caplog.text


def test_flush_is_bounded_and_discard_drops_what_was_not_started():
    sender, done, gate = Sender(backlog=3), [], threading.Event()
    sender.send(lambda: (gate.wait(BOUND_S), done.append(1)))
    sender.send(lambda: done.append(2))
    sender.send(lambda: done.append(3))
    assert sender.flush(0.1) is False  # the first is stuck
    sender.discard()
    gate.set()
    assert sender.flush(BOUND_S) and done == [1]


# --- RoundReporter -------------------------------------------------------------------------------


def test_a_round_reaches_the_task_after_its_hook_returned(fl, tmp_path):
    link = GatedLink(_running(fl, tmp_path, "bg"))
    reporter = RoundReporter(link)
    reporter.round_started_now()
    reporter.trained(1, [("a", 10, {"accuracy": 0.5})], [])
    reporter.round_done(1, 0.7, {"accuracy": 0.5}, [np.full(3, 1.0)], active=1)
    # The hook returned while its report waits: the round is not on the task yet, its checkpoint is.
    assert link.reporting.wait(BOUND_S)
    assert fl.repo.get_task("bg").history == [] and reporter.current_round == 0
    assert checkpoint_weights(fl.repo, "bg", 1)[0].tolist() == [1.0, 1.0, 1.0]
    link.gate.set()
    reporter.trained(2, [("a", 10, {"accuracy": 0.6})], [])
    reporter.round_done(2, 0.6, {"accuracy": 0.6}, [np.full(3, 2.0)], active=1)
    assert reporter.flush(BOUND_S)
    task = fl.repo.get_task("bg")
    assert [(h.round, h.loss) for h in task.history] == [(1, 0.7), (2, 0.6)]
    assert task.current_round == 2 and reporter.current_round == 2 and len(reporter.checkpoint_seconds) == 2
    resume = resume_point(fl.repo, task.model_dump())
    assert resume is not None and resume.round == 2 and resume.weights[0].tolist() == [2.0, 2.0, 2.0]


def test_a_failed_send_is_logged_and_training_goes_on(fl, tmp_path, caplog):
    link = _running(fl, tmp_path, "gone")
    fl.repo.cancel_task("gone", "enough")
    reporter = RoundReporter(link)
    with caplog.at_level(logging.WARNING, logger="flrepo.fl.core.reporting"):
        reporter.round_done(1, 0.5, {}, [np.ones(2)])
        assert reporter.flush(BOUND_S)
    assert "could not report round 1" in caplog.text and "could not checkpoint round 1" in caplog.text
    assert reporter.rounds_done == 1 and fl.repo.get_task("gone").history == []


def test_a_rounds_duration_runs_from_the_previous_rounds_end(fl, tmp_path):
    reporter = RoundReporter(_running(fl, tmp_path, "dur"))
    reporter.round_started_now()
    reporter.round_done(1, 0.5, {}, None)
    between = time.monotonic()
    while time.monotonic() - between < 0.3:  # work between the rounds (Flower's own, say)
        pass
    reporter.round_started_now()  # configuring round 2 does not restart its clock
    reporter.round_done(2, 0.4, {}, None)
    assert reporter.flush(BOUND_S)
    durations = [h.duration_s or 0.0 for h in fl.repo.get_task("dur").history]
    assert len(durations) == 2 and durations[1] >= 0.3


# --- TaskWatch -----------------------------------------------------------------------------------


def test_a_stopped_watch_never_calls_on_end_even_with_a_read_in_flight(fl, tmp_path):
    _running(fl, tmp_path, "held")
    seen = []
    watch = TaskWatch(fl.repo, "held", interval=0.05, on_end=seen.append, wait=20.0)
    watch.start()
    started_at = time.monotonic()
    watch.stop()
    assert time.monotonic() - started_at < 5  # it does not wait for a held read
    fl.repo.cancel_task("held", "enough")  # the held read (if any) now answers with the end
    watch.join(BOUND_S)
    assert not watch.is_alive() and seen == [] and watch.ended is None


def test_the_figures_say_how_long_the_rounds_waited_for_the_repository(fl, tmp_path):
    link = GatedLink(_running(fl, tmp_path, "fig"))
    reporter = RoundReporter(link, sender=Sender(backlog=1))
    reporter.round_started_now()
    reporter.round_done(1, 0.5, {}, None)
    assert link.reporting.wait(BOUND_S)  # round 1's report is stuck: round 2's hook must wait for it
    second = threading.Thread(target=reporter.round_done, args=(2, 0.4, {}, None))
    second.start()
    second.join(0.2)
    assert second.is_alive()
    link.gate.set()
    second.join(BOUND_S)
    assert reporter.flush(BOUND_S)
    figures = reporter.figures()
    durations = [h.duration_s or 0.0 for h in fl.repo.get_task("fig").history]
    assert figures["repository_wait_s"] >= 0.2 and abs(figures["rounds_s"] - sum(durations)) < 0.01
    # Two writes (round 2's after round 1's pause, hurried by the flush), round 1's held at the gate.
    assert figures["round_writes"] == 2 and figures["round_writes_s"] >= 0.2


def test_a_heartbeat_read_before_a_rounds_report_and_sent_after_it_never_sets_the_round_back(fl, tmp_path):
    """The legacy collector's heartbeat runs in its own thread while round reports go out in the
    background: what it read before a report must not undo that report once it lands after it."""
    from flwr.server.strategy import FedAvg

    from flrepo.fl.legacy.strategy import ReportingStrategy

    link = GatedLink(_running(fl, tmp_path, "hb"))
    strategy = ReportingStrategy(FedAvg(), link, {})
    reporter = strategy.reporter
    reporter.round_started_now()
    reporter.trained(1, [("a", 10, {"accuracy": 0.5})], [])
    reporter.round_done(1, 0.7, {"accuracy": 0.5}, [np.full(3, 1.0)], active=1)
    assert link.reporting.wait(BOUND_S)  # round 1's report is on its way
    progress = strategy.progress()  # the heartbeat reads meanwhile ...
    link.gate.set()
    assert reporter.flush(BOUND_S)
    assert fl.repo.get_task("hb").current_round == 1
    link.heartbeat(**progress)  # ... and its request lands after the report
    task = fl.repo.get_task("hb")
    assert task.current_round == 1 and task.heartbeat is not None and task.heartbeat.round == 1
