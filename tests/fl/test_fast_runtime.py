"""The pieces that make flrepo's Message-API runtime cost what the work costs: growing poll
intervals, the Grid that pulls replies without Flower's 3-second sleeps, the SuperNode loop's
sleeps, and the SuperExec executor that forks a warm process per task."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from flwr.app import Message, Metadata, RecordDict
from flwr.app.message import make_message
from flwr.serverapp import Grid
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResultStatus

from flrepo.fl.message import executor, fast_grid, held_pulls, supernode, warm_worker
from flrepo.fl.message.polling import Backoff
from flrepo.fl.message.programs import free_port

WAIT_S = 120.0  # upper bound for events on a busy two-core machine


def until(condition, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_backoff_starts_short_grows_to_its_cap_and_starts_again_after_a_reset():
    backoff = Backoff(0.01, 2.0, 0.05)
    assert [backoff.interval() for _ in range(5)] == [0.01, 0.02, 0.04, 0.05, 0.05]
    backoff.reset()
    assert backoff.interval() == 0.01
    with pytest.raises(ValueError):
        Backoff(0.5, 2.0, 0.1)


class SlowReplies(Grid):
    """A Grid whose replies appear only after a given number of pulls (None: never)."""

    def __init__(self, pulls_until_reply: dict[int, int | None]) -> None:
        self.pulls_until_reply = pulls_until_reply
        self.pulls = 0
        self.sent: dict[str, Message] = {}

    def set_run(self, run):  # pragma: no cover - not used
        raise NotImplementedError

    @property
    def run(self):  # pragma: no cover - not used
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # pragma: no cover
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.pulls_until_reply)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message_id = f"m{message.metadata.dst_node_id}"
            self.sent[message_id] = message
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        replies = []
        for message_id in message_ids:
            node = self.sent[message_id].metadata.dst_node_id
            after = self.pulls_until_reply[node]
            if after is not None and self.pulls >= after:
                replies.append(message(node, reply_to=message_id))
        return replies

    def send_and_receive(self, messages, *, timeout=None):  # pragma: no cover - FastGrid's is tested
        raise NotImplementedError


def message(node: int, reply_to: str = "") -> Message:
    metadata = Metadata(
        run_id=1, message_id="", src_node_id=0, dst_node_id=node, reply_to_message_id=reply_to, group_id="1",
        created_at=time.time(), ttl=60.0, message_type="train",
    )  # fmt: skip
    return make_message(metadata=metadata, content=RecordDict())


def messages(nodes: Iterable[int]) -> list[Message]:
    return [message(node) for node in nodes]


def test_fast_grid_returns_every_reply_once_pulling_until_the_last_arrives():
    inner = SlowReplies({1: 1, 2: 4, 3: 7})
    grid = fast_grid.FastGrid(inner, Backoff(0.001, 1.0, 0.001))
    replies = list(grid.send_and_receive(messages([1, 2, 3])))
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m1", "m2", "m3"]
    assert inner.pulls == 7  # stopped at the last reply


def test_fast_grid_gives_up_at_the_timeout_with_the_replies_it_has():
    inner = SlowReplies({1: 1, 2: None})
    grid = fast_grid.FastGrid(inner, Backoff(0.001, 1.0, 0.001))
    replies = list(grid.send_and_receive(messages([1, 2]), timeout=0.2))
    assert [r.metadata.reply_to_message_id for r in replies] == ["m1"]
    assert inner.pulls > 1


def test_fast_grid_is_flowers_own_grid_when_flrepo_runs_flower_as_shipped(monkeypatch):
    inner = SlowReplies({1: 1})
    assert isinstance(fast_grid.wrap(inner), fast_grid.FastGrid)
    monkeypatch.setenv("FLREPO_FLOWER_STOCK", "1")
    assert fast_grid.wrap(inner) is inner


class FakeClock:
    """Stands in for the `time` module: sleeps are recorded and move the clock; `pull` is a request."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def pull(self, seconds: float) -> None:
        self.now += seconds


def test_the_supernode_loops_sleeps_become_short_growing_intervals(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(supernode, "time", clock)
    node_time = supernode.NodeTime()
    clock.pull(0.004)
    node_time.sleep(supernode.IDLE_SLEEP)
    clock.pull(0.004)
    node_time.sleep(supernode.IDLE_SLEEP)
    node_time.sleep(supernode.REPLY_SLEEP)
    node_time.sleep(7)  # any other sleep is left alone
    first, factor, cap = supernode.IDLE
    assert clock.slept == [first, first * factor, supernode.REPLY[0], 7]
    assert cap < supernode.IDLE_SLEEP and supernode.REPLY[2] < supernode.REPLY_SLEEP


def test_after_a_pull_the_superlink_held_the_node_asks_again_at_once(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(supernode, "time", clock)
    node_time = supernode.NodeTime()
    for _ in range(3):  # quick empty pulls: the intervals grow
        clock.pull(0.004)
        node_time.sleep(supernode.IDLE_SLEEP)
    grown = clock.slept[-1]
    clock.pull(held_pulls.HOLD_S)  # held by flrepo's SuperLink until its hold ran out
    node_time.sleep(supernode.IDLE_SLEEP)
    assert clock.slept[-1] == supernode.AFTER_HELD_S < grown and node_time.held == 1
    clock.pull(0.004)  # a SuperLink that holds nothing: the intervals start short again
    node_time.sleep(supernode.IDLE_SLEEP)
    assert clock.slept[-1] == supernode.IDLE[0]
    assert supernode.HELD_PULL_S < held_pulls.HOLD_S


def test_a_wake_datagram_ends_the_superexec_loops_sleep(tmp_path):
    path = tmp_path / "wake.sock"
    clock = executor.WakeableTime(executor.wake_socket(path))
    executor.wake(path)
    executor.wake(path)
    clock.sleep(WAIT_S)  # returns at the first datagram, and drains the second
    assert clock.woken == 1
    executor.wake(tmp_path / "nobody-listens.sock")  # no executor: no error either


def spec(task_id: int = 1, task_type: TaskType = TaskType.CLIENT_APP) -> ExecutionSpec:
    return ExecutionSpec(
        task_type=task_type,
        runtime_api_address="127.0.0.1:9",
        token="a-task-token",
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
        parent_pid=os.getpid(),
        suppress_output=False,
        task_id=task_id,
    )


def write_pid_and_token(where: Path):
    def run(task: ExecutionSpec) -> None:
        (where / f"task-{task.task_id}").write_text(f"{os.getpid()} {task.token}")
        raise SystemExit(3 if task.task_id == 2 else 0)  # as Flower's flwr_exit ends an app

    return run


def fork_two_tasks(tmp_path: Path) -> None:
    """Run in a fresh interpreter (the test below): pytest's process may hold other tests' threads,
    and the executor rightly refuses to fork then."""
    fork = executor.ForkExecutor({TaskType.CLIENT_APP: write_pid_and_token(tmp_path)})
    assert fork.launch(spec(1)).status == LaunchResultStatus.ACCEPTED
    assert fork.launch(spec(2)).status == LaunchResultStatus.ACCEPTED
    until(lambda: (tmp_path / "task-1").exists() and (tmp_path / "task-2").exists())
    pids = {(tmp_path / f"task-{n}").read_text().split()[0] for n in (1, 2)}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    assert (tmp_path / "task-1").read_text().endswith(" a-task-token")
    until(lambda: fork.reconcile() or not fork.children)  # both exited and were collected
    (tmp_path / "launched").write_text(str(fork.launched))


def in_fresh_interpreter(function: str, tmp_path: Path) -> None:
    """Run this module's `function(tmp_path)` in a new Python (no threads of other tests to refuse a fork)."""
    code = f"import sys, pathlib; from tests.fl.test_fast_runtime import {function} as run; "
    code += "run(pathlib.Path(sys.argv[1]))"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == 0, done.stderr


def test_the_fork_executor_runs_each_task_in_its_own_child_with_its_token_and_reaps_it(tmp_path):
    in_fresh_interpreter("fork_two_tasks", tmp_path)
    assert (tmp_path / "launched").read_text() == "2"


def test_the_fork_executor_refuses_to_fork_while_the_process_has_another_thread(tmp_path):
    fork = executor.ForkExecutor({TaskType.CLIENT_APP: write_pid_and_token(tmp_path)})
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        result = fork.launch(spec(1))
    finally:
        release.set()
        thread.join()
    assert result.status == LaunchResultStatus.FAILED and "threads" in (result.message or "")
    assert not fork.children and not (tmp_path / "task-1").exists()


def test_the_fork_executor_starts_other_task_types_cold_as_flower_would(tmp_path, monkeypatch):
    started = []
    fork = executor.ForkExecutor({TaskType.CLIENT_APP: write_pid_and_token(tmp_path)})
    monkeypatch.setattr(fork.cold, "launch", lambda task: started.append(task.task_type) or "cold")
    assert fork.launch(spec(5, TaskType.SERVER_APP)) == "cold"
    assert started == [TaskType.SERVER_APP] and not fork.children


def write_pid_token_and_exit_handler(where: Path):
    """A task that registers an exit handler, as Flower's run_clientapp does, and ends with SystemExit."""

    def run(task: ExecutionSpec) -> None:
        from flwr.supercore.exit import exit_handler

        exit_handler.add_exit_handler(lambda: (where / f"handled-{task.task_id}").write_text("1"))
        (where / f"task-{task.task_id}").write_text(f"{os.getpid()} {task.token} {task.parent_pid}")
        raise SystemExit(0)

    return run


def work_three_tasks(tmp_path: Path) -> None:
    """Run in a fresh interpreter (the test below), as fork_two_tasks."""
    from flwr.supercore.exit import exit_handler

    worker = warm_worker.Worker(write_pid_token_and_exit_handler(tmp_path))
    fork = executor.ForkExecutor({TaskType.CLIENT_APP: write_pid_token_and_exit_handler(tmp_path)}, worker)
    assert fork.launch(spec(1)).status == LaunchResultStatus.ACCEPTED
    # While task 1 may still run, task 2 is forked on its own: a task never waits for another.
    assert fork.launch(spec(2)).status == LaunchResultStatus.ACCEPTED
    until(lambda: all((tmp_path / f"task-{n}").exists() for n in (1, 2)))
    until(lambda: worker.collect() or not worker.busy)
    assert fork.launch(spec(3)).status == LaunchResultStatus.ACCEPTED
    until(lambda: (tmp_path / "task-3").exists())
    until(lambda: worker.collect() or not worker.busy)
    pid = {n: (tmp_path / f"task-{n}").read_text().split()[0] for n in (1, 2, 3)}
    assert pid[1] == pid[3] == str(worker.pid) and pid[2] != pid[1] and str(os.getpid()) not in pid.values()
    # In the worker the task runs without the SuperNode's parent monitor (the worker dies with the
    # executor), and each task's exit handlers are its own: task 3 did not run task 1's again.
    assert (tmp_path / "task-3").read_text().endswith(" None")
    assert (tmp_path / "handled-1").exists() is False  # SystemExit, not flwr_exit: handlers not run here
    assert exit_handler.registered_exit_handlers == []
    (tmp_path / "served").write_text(str(worker.served))


def test_the_worker_runs_client_tasks_one_after_another_in_one_process_and_forks_when_busy(tmp_path):
    in_fresh_interpreter("work_three_tasks", tmp_path)
    assert (tmp_path / "served").read_text() == "2"


def test_the_workers_exit_runs_the_tasks_exit_handlers_and_leaves_the_task_not_the_process(tmp_path):
    from flwr.supercore.exit import exit_handler

    ran = []
    exit_handler.add_exit_handler(lambda: ran.append("after"))
    exit_handler.add_exit_handler(lambda: ran.append("before"), run_before_force_exit=True)
    try:
        with pytest.raises(SystemExit) as ended:
            warm_worker.exit_in_worker(0)
    finally:
        exit_handler.registered_exit_handlers.clear()
    assert ended.value.code == 0 and ran == ["before", "after"]
    with pytest.raises(SystemExit) as failed:
        warm_worker.exit_in_worker(100, "failed")
    assert failed.value.code == 1


def test_a_task_spec_crosses_to_the_worker_unchanged():
    task = spec(7)
    assert warm_worker.spec_of(warm_worker.spec_line(task)) == task


def test_a_fresh_clientapp_per_message_is_one_variable_away(monkeypatch):
    monkeypatch.delenv(executor.COLD_ENV, raising=False)
    assert not executor.cold_clientapps()
    monkeypatch.setenv(executor.COLD_ENV, "1")
    assert executor.cold_clientapps()


def fork_site_superexec(tmp_path: Path) -> None:
    """Run in a fresh interpreter (the test below), as fork_two_tasks."""
    from flrepo.fl.message import site_superexec

    port = free_port()
    forked = site_superexec.start(tmp_path / "no-site", tmp_path / "superexec", port)
    assert forked is not None and forked.port == port
    # Flower's SuperExec loop in a child of this process (the local execution), waiting for its
    # SuperNode's Runtime API.
    status = Path(f"/proc/{forked.pid}/status").read_text()
    assert f"PPid:\t{os.getpid()}" in status
    assert os.waitpid(forked.pid, os.WNOHANG) == (0, 0)
    env = forked.env()
    assert Path(env[site_superexec.SECRET_ENV]).stat().st_size == 32
    assert Path(env[site_superexec.WAKE_ENV]).exists()  # bound before the fork: no wake is lost
    forked.stop()
    assert not Path(f"/proc/{forked.pid}").exists()  # stopped and reaped
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:  # with a second thread the fork would be unsafe: the SuperNode starts its own SuperExec then
        assert site_superexec.start(tmp_path / "no-site", tmp_path / "again", free_port()) is None
    finally:
        release.set()
        thread.join()
    (tmp_path / "forked").write_text("1")


def test_a_local_execution_forks_its_sites_superexec_only_while_it_has_one_thread(tmp_path):
    in_fresh_interpreter("fork_site_superexec", tmp_path)
    assert (tmp_path / "forked").read_text() == "1"
