"""The collector's round writes (flrepo.fl.core.round_writes): rounds that end while a write is made,
or before the next is due, are written together; the writes keep within their share of the time;
the best round's checkpoint is never skipped; flush writes at once."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from flrepo.fl.core import round_writes
from flrepo.fl.core.reporting import Sender
from flrepo.fl.core.round_writes import RoundWrites, Staged, write_share

BOUND_S = 60.0  # generous upper bound of every wait below


class Recorder:
    """The write callbacks: what was written, when, optionally held at a gate."""

    def __init__(self, gate: threading.Event | None = None, write_s: float = 0.0) -> None:
        self.gate, self.write_s = gate, write_s
        self.checkpoints: list[int] = []
        self.reports: list[list[int]] = []
        self.spans: list[tuple[float, float]] = []  # each write's start (first checkpoint or report) and end
        self.writing = threading.Event()
        self._start: float | None = None

    def checkpoint(self, staged: Staged) -> bool:
        self._start = self._start or time.monotonic()
        self.checkpoints.append(staged.round)
        return True

    def report(self, fields: dict) -> None:
        start = self._start or time.monotonic()
        self.writing.set()
        if self.gate is not None:
            assert self.gate.wait(BOUND_S)
        if self.write_s:
            time.sleep(self.write_s)  # the write's own duration, which sets the pause after it
        self.reports.append([r["round"] for r in [*fields.get("round_records", []), fields["round"]]])
        self.spans.append((start, time.monotonic()))
        self._start = None


def staged(n: int, loss: float | None) -> Staged:
    return Staged(n, loss, {}, [np.full(2, float(n))])


def add(writes: RoundWrites, n: int, loss: float | None = None, weights: bool = True) -> None:
    writes.add({"current_round": n}, {"round": n, "loss": loss}, staged(n, loss) if weights else None)


def test_rounds_that_end_during_a_write_are_written_together_with_the_best_kept():
    gate = threading.Event()
    recorder = Recorder(gate)
    sender = Sender()
    writes = RoundWrites(sender, recorder.checkpoint, recorder.report, share=1.0)  # no pause: only merging
    add(writes, 1, 0.5)
    assert recorder.writing.wait(BOUND_S)  # round 1's write is held at the gate
    add(writes, 2, 0.3)  # the lowest loss: its checkpoint must be written although round 4 is newer
    add(writes, 3, 0.4)
    add(writes, 4, 0.45)
    gate.set()
    assert sender.flush(BOUND_S)
    # Rounds 2-3 reported before the checkpoints, round 4 after them (the service takes a checkpoint
    # at most one round past the task's reported progress).
    assert recorder.reports == [[1], [2, 3], [4]]
    assert recorder.checkpoints == [1, 2, 4] and writes.writes == 2
    # A newest round with the lowest loss needs no other; a held one worse than what is written neither.
    add(writes, 5, 0.2)
    assert sender.flush(BOUND_S) and recorder.checkpoints[-1] == 5


def test_a_held_round_no_better_than_what_is_written_is_not_checkpointed():
    gate = threading.Event()
    recorder = Recorder(gate)
    sender = Sender()
    writes = RoundWrites(sender, recorder.checkpoint, recorder.report, share=1.0)
    add(writes, 1, 0.1)
    assert recorder.writing.wait(BOUND_S)
    add(writes, 2, 0.3)
    add(writes, 3, 0.4)
    gate.set()
    assert sender.flush(BOUND_S)
    assert recorder.checkpoints == [1, 3] and recorder.reports == [[1], [2], [3]]


def test_the_writes_keep_within_their_share_of_the_time():
    share, write_s = 0.5, 0.05
    recorder = Recorder(write_s=write_s)
    sender = Sender()
    writes = RoundWrites(sender, recorder.checkpoint, recorder.report, share=share)
    for n in range(1, 41):  # rounds far quicker than the writes (no weights: one report per write)
        add(writes, n, 1.0 / n, weights=False)
        time.sleep(0.01)
    assert sender.flush(BOUND_S)  # no flush of the writes: every pause is taken
    assert [r for rounds in recorder.reports for r in rounds] == list(range(1, 41))  # every round, in order
    assert 3 <= len(recorder.reports) < 40  # merged
    assert writes.writes == len(recorder.reports)
    assert writes.seconds >= write_s * writes.writes  # each write's own time, added up
    for (start, end), (next_start, _) in zip(recorder.spans, recorder.spans[1:], strict=False):
        # Each pause at least what the share asks: (end - start) * (1 - share) / share.
        assert next_start - end >= (end - start) * (1 - share) / share - 0.01


def test_the_first_round_waits_a_pause_as_though_a_write_had_just_ended():
    share, first_cost = 0.5, 0.2  # the first write is due 0.2 * (1 - 0.5) / 0.5 = 0.2 s after round 1
    recorder = Recorder()
    sender = Sender()
    writes = RoundWrites(sender, recorder.checkpoint, recorder.report, share=share, first_cost=lambda: first_cost)
    ended = time.monotonic()
    add(writes, 1, 0.5)
    add(writes, 2, 0.4)  # ends inside the first pause: written with round 1
    assert sender.flush(BOUND_S)
    assert recorder.reports == [[1], [2]] and recorder.checkpoints == [2]
    assert recorder.spans[0][0] - ended >= first_cost * (1 - share) / share - 0.01
    # However slow the repository looked, round 1 shows within MAX_FIRST_PAUSE_S.
    recorder = Recorder()
    sender = Sender()
    writes = RoundWrites(sender, recorder.checkpoint, recorder.report, share=0.0001, first_cost=lambda: 60.0)
    ended = time.monotonic()
    add(writes, 1, 0.5)
    assert sender.flush(BOUND_S) and recorder.reports == [[1]]
    assert round_writes.MAX_FIRST_PAUSE_S - 0.01 <= recorder.spans[0][0] - ended < round_writes.MAX_PAUSE_S
    # Without an estimate (no status report timed yet), round 1 is written at once, as before.
    recorder = Recorder(gate=threading.Event())
    sender = Sender()
    writes = RoundWrites(sender, recorder.checkpoint, recorder.report, share=0.0001)
    add(writes, 1, 0.5)
    assert recorder.writing.wait(BOUND_S)
    recorder.gate.set()
    assert sender.flush(BOUND_S) and recorder.reports == [[1]]


def test_a_link_times_its_status_reports_and_shares_the_timing(fl, tmp_path):
    from flrepo.fl.core.link import TaskLink
    from flrepo.fl.core.reporting import RoundReporter
    from flrepo.fl.demo import digits_task, register_model
    from flrepo.fl.privacy_accounting import AccountedLink, Ledger

    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    fl.repo.create_task(digits_task("timed", rounds=3, clients=1))
    link = TaskLink(fl.repo, "timed")
    assert link.timing.report_s == 0.0
    link.report(phase="Running")
    assert link.timing.report_s > 0.0
    accounted = AccountedLink(link, Ledger.__new__(Ledger))
    assert accounted.timing is link.timing  # the round reports under DP see the same timing
    reporter = RoundReporter(accounted)
    assert reporter.writes.first_cost() == 3 * link.timing.report_s
    # Its reports ask for no round records in the answer (nothing reads them there); none is lost.
    link.report(current_round=1, round={"round": 1, "loss": 0.5})
    answer = link.heartbeat(active=1)
    assert answer.history == [] and answer.history_total == 1
    assert [h.round for h in fl.repo.get_task("timed").history] == [1]


def test_a_link_writes_a_checkpoint_in_one_request_or_two_for_an_older_service(fl, tmp_path, monkeypatch):
    from flrepo.client import NotFound
    from flrepo.fl.core.link import TaskLink
    from flrepo.fl.demo import digits_task, register_model

    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    fl.repo.create_task(digits_task("kept", rounds=3, clients=1))
    link = TaskLink(fl.repo, "kept")
    link.report(phase="Running")
    sent: list[bool] = []
    upload = fl.repo.upload_checkpoint

    def recorded(task_id, round_, source, *, register=False, **options):
        sent.append(register)
        return upload(task_id, round_, source, register=register, **options)

    monkeypatch.setattr(fl.repo, "upload_checkpoint", recorded)
    link.checkpoint(1, 0.5, {"accuracy": 0.7}, [np.full(2, 1.0)])
    assert sent == [True]  # registered by its upload

    def older(task_id, round_, source, *, register=False, **options):  # a service from before register=true
        sent.append(register)
        if register:
            raise NotFound("PUT: 404 checkpoint 2 of task 'kept' not found", status=404)
        return upload(task_id, round_, source, **options)

    monkeypatch.setattr(fl.repo, "upload_checkpoint", older)
    link.checkpoint(2, 0.25, {"accuracy": 0.8}, [np.full(2, 2.0)])
    assert sent == [True, True, False]  # registered first, then uploaded
    filed = [(c.round, c.loss, c.metrics, c.size is not None) for c in fl.repo.list_checkpoints("kept")]
    assert filed == [(1, 0.5, {"accuracy": 0.7}, True), (2, 0.25, {"accuracy": 0.8}, True)]


def test_flush_writes_at_once_and_drop_writes_nothing(monkeypatch):
    monkeypatch.setattr(round_writes, "MAX_PAUSE_S", 3600.0)  # without the flush, the next write waits an hour
    recorder = Recorder(write_s=0.05)
    sender = Sender()
    writes = RoundWrites(sender, recorder.checkpoint, recorder.report, share=0.0001)
    add(writes, 1, 0.5)
    assert sender.flush(BOUND_S)
    add(writes, 2, 0.4)  # due in about 500 s
    writes.flush()
    assert sender.flush(BOUND_S) and recorder.reports == [[1], [2]]

    dropped = Recorder(write_s=0.05)
    sender = Sender()
    writes = RoundWrites(sender, dropped.checkpoint, dropped.report, share=0.0001)
    add(writes, 1, 0.5)
    assert sender.flush(BOUND_S)
    add(writes, 2, 0.4)
    writes.drop()
    assert sender.flush(BOUND_S) and dropped.reports == [[1]] and dropped.checkpoints == [1]


def test_a_final_flush_keeps_the_newest_rounds_report_for_the_tasks_end_report(monkeypatch):
    monkeypatch.setattr(round_writes, "MAX_PAUSE_S", 3600.0)
    gate = threading.Event()
    recorder = Recorder(gate, write_s=0.05)
    sender = Sender()
    writes = RoundWrites(sender, recorder.checkpoint, recorder.report, share=0.0001)
    add(writes, 1, 0.5)
    assert recorder.writing.wait(BOUND_S)  # round 1's write is under way when the last rounds end
    add(writes, 2, 0.4)
    add(writes, 3, 0.3)
    writes.flush(final=True)
    gate.set()
    assert sender.flush(BOUND_S)
    # Round 1's write was not the last one, so it was sent; the last one reported round 2, wrote round
    # 3's checkpoint, and kept round 3's report for the task's end.
    assert recorder.reports == [[1], [2]] and recorder.checkpoints == [1, 3]
    assert writes.held is not None and writes.held["round"]["round"] == 3 and writes.held["current_round"] == 3

    # The end was not reported (the publishing failed): a plain flush sends the round on its own.
    writes.flush()
    assert sender.flush(BOUND_S) and recorder.reports == [[1], [2], [3]] and writes.held is None


@pytest.mark.parametrize(("value", "expected"), [("", 0.02), ("0.2", 0.2), ("1", 1.0), ("0", 0.02), ("x", 0.02)])
def test_the_share_comes_from_the_environment(monkeypatch, caplog, value, expected):
    monkeypatch.setenv(round_writes.SHARE_ENV, value)
    with caplog.at_level(logging.WARNING, logger="flrepo.fl.core.round_writes"):
        assert write_share() == expected
    assert ("not a share" in caplog.text) == (value in ("0", "x"))
