"""Tasks that run themselves and never get stuck, with real processes on the legacy (aerOS) runtime:
a killed collector, too few participants, cancel, and local executions that find their collector
(over TLS) through the task's status. Measured times are printed (pytest -s)."""

from __future__ import annotations

import signal
import sys
import time

from flrepo.client import calls
from flrepo.fl import demo
from flrepo.fl.demo import digits_task, register_model, start_collector, start_local_exec, write_partitions
from flrepo.server.embedded import free_port, reap
from tests.helpers import last_condition, logs_of, make_tls, wait_for

QUICK = {"epochs": 1, "batch_size": 64, "learning_rate": 0.01, "optimizer": "adam"}


def _plan(task_id, **extra):
    return digits_task(task_id, "fedavg", framework="pytorch", training=QUICK, **extra)


def _waiting(fl, *sites):
    """Whether these local executions are ready to train and only wait for their collector (they log it)."""
    return all("waiting for its collector" in (fl.logs / f"local-exec-{k}.log").read_text() for k in sites)


def _phase(fl, task_id):
    return fl.repo.get_task(task_id).model_dump(mode="json")


def test_a_killed_collector_fails_its_task_with_collector_lost(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "pytorch", tmp_path)
    fl.repo.create_task(_plan("lost", rounds=2, clients=2, heartbeat_timeout=10))
    collector = start_collector(fl.url, "lost", fl.env, fl.logs, f"127.0.0.1:{free_port()}")
    try:  # no participants: it waits for them, heartbeating
        wait_for(lambda: (_phase(fl, "lost")["heartbeat"] or {}).get("collector"), 300, "collector up")
        collector.send_signal(signal.SIGKILL)
        collector.wait(60)
        killed = time.monotonic()
        # The service's watcher sees it after the 10 s timeout; on a busy machine maybe much later.
        task = wait_for(lambda: (t := _phase(fl, "lost"))["phase"] != "Running" and t, 10 + 170, "CollectorLost")
        print(f"\nmeasured: SIGKILL -> Failed/CollectorLost in {time.monotonic() - killed:.1f} s (timeout 10 s)")
    finally:
        reap([collector], terminate=True)
    reason, message = last_condition(task)
    assert task["phase"] == "Failed" and reason == "CollectorLost", logs_of(fl.logs)
    assert "heartbeat_timeout 10 s" in message and task["heartbeat"]["collector"] in message


def test_one_of_two_participants_fails_the_task_after_participants_timeout(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "pytorch", tmp_path)
    # The one site must join within the timeout: it starts first and is ready (torch imported, model and
    # data loaded) before the collector starts, so the 30 s cover only its discovery and connection. Started
    # together, on a busy machine the site's own start took longer than the timeout ("0 of 2 participants").
    fl.repo.create_task(_plan("few", rounds=2, clients=2, participants_timeout=30))
    data = write_partitions(tmp_path, 2)
    site = start_local_exec(fl.url, "few", data[0], fl.env, fl.logs, 1)
    collector = None
    try:
        wait_for(lambda: _waiting(fl, 1), 300, "site ready\n" + logs_of(fl.logs))
        collector = start_collector(fl.url, "few", fl.env, fl.logs, f"127.0.0.1:{free_port()}")
        wait_for(lambda: _phase(fl, "few")["phase"] == "Running", 300, "Running")
        running = time.monotonic()
        task = wait_for(lambda: (t := _phase(fl, "few"))["phase"] != "Running" and t, 30 + 170, "NotEnoughParticipants")
        print(
            f"\nmeasured: 1 of 2 participants -> Failed {time.monotonic() - running:.1f} s after Running (timeout 30 s)"
        )
        collector.wait(300)
        site.wait(300)
    finally:
        reap([p for p in (collector, site) if p], terminate=True)
    task = _phase(fl, "few")
    reason, message = last_condition(task)
    assert task["phase"] == "Failed" and reason == "NotEnoughParticipants", logs_of(fl.logs)
    assert "1 of 2 participants joined within 30 s" in message
    assert collector.returncode == 1 and site.returncode == 1 and task["current_round"] == 0
    assert [c["type"] for c in task["conditions"]] == ["Training", "Failed"]


# How a script's background job starts (`flrepo collector ... &` in the README): SIGINT ignored.
SIGINT_IGNORED = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"
)


def test_cancel_stops_the_collector_and_its_local_executions(fl, tmp_path, monkeypatch):
    # Started as a script's background jobs: a cancel still stops them (they stop themselves with a
    # signal of their own, not with the SIGINT such a job ignores).
    monkeypatch.setattr(demo, "CLI", [sys.executable, "-c", SIGINT_IGNORED, *demo.CLI])
    register_model(fl.repo, "digits", "v1", "pytorch", tmp_path)
    fl.repo.create_task(_plan("stop", rounds=50, clients=2))
    data = write_partitions(tmp_path, 2)
    collector = start_collector(fl.url, "stop", fl.env, fl.logs, f"127.0.0.1:{free_port()}")
    sites = [start_local_exec(fl.url, "stop", spec, fl.env, fl.logs, k) for k, spec in enumerate(data, start=1)]
    try:
        # Events, with bounds generous enough for a busy machine (the printed figures are the measure).
        wait_for(lambda: _phase(fl, "stop")["current_round"] >= 1, 600, "round 1\n" + logs_of(fl.logs))
        wait_for(lambda: _phase(fl, "stop")["active"] == 2, 300, "both sites connected")
        fl.repo.cancel_task("stop", "enough")
        cancelled = time.monotonic()
        collector.wait(300)
        print(f"\nmeasured: cancel -> collector exited in {time.monotonic() - cancelled:.1f} s")
        for site in sites:
            site.wait(300)
        print(f"measured: cancel -> local executions exited in {time.monotonic() - cancelled:.1f} s")
    finally:
        reap([collector, *sites], terminate=True)
    assert collector.returncode == 0 and [s.returncode for s in sites] == [0, 0], logs_of(fl.logs)
    task = _phase(fl, "stop")
    assert task["phase"] == "Failed" and last_condition(task) == ("Cancelled", "cancelled by anonymous: enough")
    assert "collector stopped" in (fl.logs / "collector.log").read_text()
    # Nothing of the cancelled run is presented as its result; the task can go.
    assert list(fl.repo.list_training_results()) == [] and fl.repo.list_models().total == 1
    fl.repo.delete_task("stop")


def test_local_executions_find_their_collector_through_the_task_over_tls(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "pytorch", tmp_path)
    fl.repo.create_task(_plan("found", rounds=1, clients=2))
    data = write_partitions(tmp_path, 2)
    # The local executions start first, with no --server and no CA: they wait for the collector.
    sites = [start_local_exec(fl.url, "found", spec, fl.env, fl.logs, k) for k, spec in enumerate(data, start=1)]
    wait_for(lambda: _waiting(fl, 1, 2), 300, "both sites ready\n" + logs_of(fl.logs))
    assert all(site.poll() is None for site in sites) and _phase(fl, "found")["phase"] == "Pending"
    port = free_port()
    tls = ["--tls-dir", str(make_tls(tmp_path / "tls")), "--advertise", f"localhost:{port}"]
    collector = start_collector(fl.url, "found", fl.env, fl.logs, f"0.0.0.0:{port}", tls)
    started = time.monotonic()
    try:
        collector.wait(600)
        for site in sites:
            site.wait(300)
        elapsed = time.monotonic() - started
        print(f"\nmeasured: discovery over TLS (2 sites, 1 round) done {elapsed:.1f} s after the collector started")
    finally:
        reap([collector, *sites], terminate=True)
    task = _phase(fl, "found")
    assert collector.returncode == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    assert [s.returncode for s in sites] == [0, 0]
    assert (task["runtime"], task["server_address"]) == ("legacy", f"localhost:{port}")
    assert task["server_ca"] == (tmp_path / "tls" / "ca.crt").read_text()
    assert (task["active"], task["succeeded"], task["failed"]) == (0, 2, 0)
    assert [c["type"] for c in task["conditions"]] == ["Training", "Completed"]
    assert "TLS" in task["conditions"][0]["message"]
    assert fl.repo.read(calls.weights_download("digits", "v1", "found"))  # the aerOS result is still written
