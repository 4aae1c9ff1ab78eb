"""A PyTorch site's SuperExec is forked from its local execution before PyTorch ran an operation
(flrepo.fl.message.site_superexec.prefork), and the site trains on it; a site whose pre-forked
child is gone, or that cannot fork, falls back to a SuperExec started another way and trains too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")

from flrepo.fl.demo import digits_task, register_model, start_collector, start_local_exec, write_partitions
from flrepo.fl.message import site_superexec
from flrepo.server.embedded import free_port, reap
from tests.helpers import logs_of, wait_for

QUICK = {"epochs": 1, "batch_size": 64, "learning_rate": 0.01, "optimizer": "adam"}
WAIT_S = 600.0  # upper bound for events on a busy two-core machine
FORKED = "the site's SuperExec is the process forked before the framework ran (pid {})"


NODE_FORKED = "the site's SuperNode is the process forked before the framework ran (pid {})"


def forked_children(pid: int, name: str) -> list[int]:
    """The children of `pid` that run its own program (forked, not started) under the process name
    `name` (fl-superexec, fl-supernode)."""
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes() == command:
                if Path(f"/proc/{child}/comm").read_text().strip() == name:
                    found.append(int(child))
        except OSError:  # ended meanwhile
            pass
    return found


def test_a_pytorch_sites_superexec_is_forked_before_pytorch_ran_and_a_site_without_it_falls_back(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "pytorch", tmp_path)
    fl.repo.create_task(digits_task("pre", "message-fedavg", rounds=2, clients=2, framework="pytorch", training=QUICK))
    data = write_partitions(tmp_path, 2)
    # The sites first: each pre-forks as soon as it loaded the model, then waits for its collector.
    sites = [start_local_exec(fl.url, "pre", str(spec), fl.env, fl.logs, k) for k, spec in enumerate(data, start=1)]
    collector = None
    try:
        for k in (1, 2):
            wait_for(
                lambda k=k: "waiting for its collector" in (fl.logs / f"local-exec-{k}.log").read_text(),
                WAIT_S,
                f"site {k} ready\n" + logs_of(fl.logs),
            )
        # One waiting child each for the SuperExec and one for the SuperNode, nothing else forked yet.
        children = [forked_children(site.pid, "fl-superexec") for site in sites]
        nodes = [forked_children(site.pid, "fl-supernode") for site in sites]
        assert [len(c) for c in children] == [1, 1] and [len(n) for n in nodes] == [1, 1], (children, nodes)
        # Site 2's child dies before it is used: that site must start its SuperExec another way.
        os.kill(children[1][0], signal.SIGKILL)
        address = f"127.0.0.1:{free_port()}"
        collector = start_collector(fl.url, "pre", fl.env, fl.logs, address, ["--insecure"])
        # The collector's SuperLink is its forked child (flrepo.fl.message.superlink.fork), up once published.
        wait_for(lambda: fl.repo.get_task("pre").server_address, WAIT_S, "published\n" + logs_of(fl.logs))
        superlinks = forked_children(collector.pid, "fl-superlink")
        assert len(superlinks) == 1 or collector.poll() is not None, logs_of(fl.logs)
        assert collector.wait(WAIT_S) == 0, logs_of(fl.logs)
        forked = "the SuperLink is forked from this process (pid {})"
        assert all(forked.format(pid) in (fl.logs / "collector.log").read_text() for pid in superlinks)
        assert "the SuperLink is forked from this process" in (fl.logs / "collector.log").read_text()
        assert [site.wait(WAIT_S) for site in sites] == [0, 0], logs_of(fl.logs)
    finally:
        reap([p for p in [collector, *sites] if p is not None], terminate=True)
    task = fl.repo.get_task("pre").model_dump(mode="json")
    assert task["phase"] == "Succeeded", logs_of(fl.logs)
    assert [h["round"] for h in task["history"]] == [1, 2] and all(h["participants"] == 2 for h in task["history"])
    first, second = ((fl.logs / f"local-exec-{k}.log").read_text() for k in (1, 2))
    assert FORKED.format(children[0][0]) in first  # the pre-forked child served site 1's ClientApps
    assert "cannot be used" in second and FORKED.format(children[1][0]) not in second
    # Both sites' SuperNodes are their pre-forked children (site 2's too: its SuperExec's death is
    # its own), and Flower's lines are printed once.
    assert NODE_FORKED.format(nodes[0][0]) in first and NODE_FORKED.format(nodes[1][0]) in second
    for text in (first, second):
        assert text.count("SuperNode ID:") == 1, text


def prefork_or_not(tmp_path: Path) -> None:
    """Run in a fresh interpreter (the test below): a pre-fork that is not needed exits and is reaped;
    none is made while a second thread runs or after TensorFlow loaded; a pre-forked child that died
    is reported, not used."""
    child = site_superexec.prefork()
    assert child is not None and child.node is not None
    assert os.waitpid(child.pid, os.WNOHANG) == (0, 0) and os.waitpid(child.node.pid, os.WNOHANG) == (0, 0)  # waiting
    child.cancel()  # the site took the legacy runtime
    for pid in (child.pid, child.node.pid):
        assert not Path(f"/proc/{pid}").exists()  # exited on the pair's close, and reaped
    assert child.go(tmp_path / "site", tmp_path / "late", free_port()) is None  # used up
    assert child.node.start(["--help"], dict(os.environ)) is None

    # The SuperNode's child runs flower-supernode's command line; its exit code is the program's.
    for args, code in ((["--help"], 0), (["--no-such-option"], 2)):
        child = site_superexec.prefork()
        assert child is not None and child.node is not None
        node = child.node.start(args, dict(os.environ))
        assert node is not None and node.wait(60) == code and node.poll() == code
        child.cancel()

    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert site_superexec.prefork() is None
    finally:
        release.set()
        thread.join()

    sys.modules["tensorflow"] = types.ModuleType("tensorflow")  # as after loading a Keras model
    try:  # its thread pools run already: a Keras site starts its SuperExec as before
        assert site_superexec.prefork() is None
    finally:
        del sys.modules["tensorflow"]

    dead = site_superexec.prefork()
    assert dead is not None
    os.kill(dead.pid, signal.SIGKILL)
    os.waitpid(dead.pid, 0)
    assert dead.go(tmp_path / "site", tmp_path / "dead", free_port()) is None
    assert dead.channel is None
    assert dead.node is not None and os.waitpid(dead.node.pid, os.WNOHANG) == (0, 0)  # the SuperNode's still waits
    os.kill(dead.node.pid, signal.SIGKILL)
    os.waitpid(dead.node.pid, 0)
    assert dead.node.start(["--help"], dict(os.environ)) is None and dead.node.channel is None

    # The collector's SuperLink, forked: its exit code is the launcher's; none beside a thread.
    from flrepo.fl.message import superlink

    for args, code in ((["--fleet-address", "127.0.0.1:1", "--help"], 0), (["--help"], 1)):  # no --fleet-address
        forked = superlink.fork(args, dict(os.environ))
        assert forked is not None and forked.wait(60) == code, args
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert superlink.fork(["--help"], dict(os.environ)) is None
    finally:
        release.set()
        thread.join()
    (tmp_path / "checked").write_text("1")


def test_a_pre_fork_exits_when_unused_is_not_made_beside_a_thread_or_tensorflow_and_a_dead_one_is_not_used(tmp_path):
    code = (
        "import sys, pathlib; from tests.fl.test_prefork import prefork_or_not as run; run(pathlib.Path(sys.argv[1]))"
    )
    root = Path(__file__).resolve().parents[2]  # a new Python: no threads of other tests to refuse the fork
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "checked").read_text() == "1"


def test_a_superlinks_executor_asks_seldom_once_it_launched_its_runs_serverapp(monkeypatch):
    from flrepo.fl.message import executor

    slept: list[float] = []
    monkeypatch.setattr(executor.time, "sleep", slept.append)
    launched = [0]
    clock = executor.WakeableTime(None, lambda: launched[0] > 0, executor.SERVERAPP_LAUNCHED_POLL_S)
    clock.sleep(0.1)  # waiting for the run: Flower's loop's own (short) interval
    launched[0] = 1
    clock.sleep(0.1)  # the run's ServerApp is running: no other task is coming soon
    assert slept == [0.1, executor.SERVERAPP_LAUNCHED_POLL_S] and executor.SERVERAPP_LAUNCHED_POLL_S >= 1


def test_a_site_pre_forks_unless_its_tasks_strategy_is_declared_for_the_legacy_runtime(fl):
    from flrepo.fl import local_exec

    def declared(name: str) -> str | None:
        return local_exec._declared_runtime(fl.repo, {"task_id": "t", "strategy": {"strategy_name": name}})

    # The signed catalogue's strategies say which runtime they are for; a site forks no SuperExec for
    # a legacy one (its copy-on-write faults would cost the training), and forks for anything else.
    assert (declared("fedavg"), declared("message-fedavg")) == ("legacy", "message")
    assert declared("no-such-strategy") is None
