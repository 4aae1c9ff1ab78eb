"""Flower's Message API runtime, secured: a `flwr.serverapp.strategy` FedAvg task runs on Flower's
SuperLink/SuperNode with TLS and SuperNode authentication; an unlisted participant is refused, a
plaintext one cannot connect, and the participant-facing address serves the Fleet API only."""

from __future__ import annotations

import re
import ssl
import subprocess
import time

import httpx
import pytest

from flrepo.fl.demo import (
    digits_task,
    held_out_accuracy,
    register_model,
    start_local_exec,
    start_training,
    write_partitions,
)
from flrepo.fl.message import programs
from flrepo.server.embedded import free_port, reap
from tests.helpers import logs_of, make_participant_key, make_tls, wait_for

QUICK = {"epochs": 1, "batch_size": 64, "learning_rate": 0.01, "optimizer": "adam"}


def _supernode(address, tmp_path, name, *options):
    """flower-supernode itself (not a local execution), its output in its own log."""
    argv = [*programs.command("flower-supernode"), "--superlink", address, "--port", str(free_port()), *options]
    argv += ["--max-retries", "2", "--max-wait-time", "20"]
    log = open(tmp_path / f"{name}.log", "wb")
    return subprocess.Popen(
        argv, env=programs.flower_env(tmp_path / f"{name}-home"), stdout=log, stderr=subprocess.STDOUT
    )


def test_a_message_api_fedavg_task_with_tls_and_authenticated_participants(fl, tmp_path):
    initial = register_model(fl.repo, "digits", "v1", "pytorch", tmp_path)
    keys = {k: tmp_path / f"site-{k}" for k in (1, 2)}
    allowed = [make_participant_key(path) for path in keys.values()]
    make_participant_key(tmp_path / "intruder")  # never listed
    plan = digits_task("msg", "message-fedavg", rounds=2, clients=2, framework="pytorch", training=QUICK)
    fl.repo.create_task({**plan, "participant_keys": allowed})
    tls = make_tls(tmp_path / "tls")
    port = free_port()
    address = f"127.0.0.1:{port}"
    # The collector alone first: the listed sites join after the checks below, so the training (a
    # few seconds on the fast runtime) cannot end before the intruders have been turned away.
    collector, sites = start_training(
        fl.url, "msg", [], fl.env, fl.logs, address=address, collector_options=["--tls-dir", str(tls)]
    )
    others = []
    try:
        task = wait_for(
            lambda: (t := fl.repo.get_task("msg")).server_address and t, 300, "address\n" + logs_of(fl.logs)
        )
        assert (task.runtime, task.server_address) == ("message", address) and "BEGIN CERTIFICATE" in task.server_ca

        # TLS: a plaintext request gets no answer; a TLS one reaches the Fleet API only.
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"http://{address}/v1/fleet/register-node", content=b"", timeout=5)
        ca = str(tls / "ca.crt")
        trust = ssl.create_default_context(cafile=ca)
        assert httpx.post(f"https://{address}/v1/control/list-runs", verify=trust, timeout=60).status_code == 404
        assert httpx.post(f"https://{address}/v1/control/register-node", verify=trust, timeout=60).status_code == 404

        # A SuperNode whose key is not listed is refused, and so is a plaintext one; a local execution with
        # an unlisted key is told so, before it even tries. The three start together (each start is seconds).
        intruder = _supernode(address, tmp_path, "intruder", "--root-certificates", ca,
                              "--auth-supernode-private-key", str(tmp_path / "intruder"))  # fmt: skip
        plaintext = _supernode(address, tmp_path, "plaintext", "--insecure")
        unlisted = start_local_exec(fl.url, "msg", "digits:1/2", fl.env, fl.logs, 3,
                                    ["--participant-key", str(tmp_path / "intruder")])  # fmt: skip
        others += [intruder, plaintext, unlisted]
        assert intruder.wait(300) != 0 and plaintext.wait(300) != 0
        assert "Failed to activate SuperNode" in (tmp_path / "intruder.log").read_text()
        assert "Failed to initialize the connection to the SuperLink" in (tmp_path / "plaintext.log").read_text()
        assert unlisted.wait(300) == 1
        assert "not in the task's participant_keys" in (fl.logs / "local-exec-3.log").read_text()

        sites = [
            start_local_exec(fl.url, "msg", str(data), fl.env, fl.logs, k, ["--participant-key", str(keys[k])])
            for k, data in enumerate(write_partitions(tmp_path, 2), start=1)
        ]

        started = time.monotonic()
        collector.wait(300)
        print(
            f"\nmeasured: Message-API task (2 sites, 2 rounds) ran {time.monotonic() - started:.1f} s after the checks"
        )
        for site in sites:
            site.wait(300)
    finally:
        reap([collector, *sites, *others], terminate=True)
    task = fl.repo.get_task("msg").model_dump(mode="json")
    assert collector.returncode == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    assert [s.returncode for s in sites] == [0, 0]
    assert [h["round"] for h in task["history"]] == [1, 2] and all(h["participants"] == 2 for h in task["history"])
    assert (task["active"], task["succeeded"], task["failed"]) == (0, 2, 0) and len(task["participants"]) == 2
    assert task["strategy_settings"]["min_available_nodes"] == {"value": 2, "source": "task min_participants"}
    assert [c["type"] for c in task["conditions"]] == ["Training", "Completed"]
    trained = tmp_path / "trained.pt2"
    fl.repo.download_model("digits", task["result"]["output_model_version"], trained)
    before, after = held_out_accuracy("pytorch", initial), held_out_accuracy("pytorch", trained)
    assert after > before + 0.3, (before, after)  # it learned: the rounds ran through the Message API
    assert fl.repo.get_training_result("digits", "v1", "msg").results["runtime"] == "message"


def test_the_message_api_runtime_needs_tls_or_an_explicit_insecure(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "pytorch", tmp_path)
    fl.repo.create_task(digits_task("plain", "message-fedavg", rounds=1, clients=1, framework="pytorch"))
    from flrepo.fl.demo import CLI

    command = [*CLI, "collector", "--task", "plain", "--repo", fl.url, "--address", f"127.0.0.1:{free_port()}"]
    done = subprocess.run(command, env=fl.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "needs TLS" in done.stdout + done.stderr
    assert fl.repo.get_task("plain").phase == "Pending"  # a collector started wrongly does not fail the task


def test_cancel_stops_a_message_api_task_served_in_plaintext_on_request(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "pytorch", tmp_path)
    # Two participants needed, one comes: the ServerApp waits for the second until the cancel.
    fl.repo.create_task(digits_task("halt", "message-fedavg", rounds=2, clients=2, framework="pytorch"))
    collector, sites = start_training(fl.url, "halt", ["digits:1/2"], fl.env, fl.logs, collector_options=["--insecure"])
    try:
        wait_for(lambda: fl.repo.get_task("halt").active == 1, 600, "one SuperNode online\n" + logs_of(fl.logs))
        task = fl.repo.get_task("halt")
        assert task.runtime == "message" and task.server_ca is None and "plaintext" in task.conditions[0].message
        fl.repo.cancel_task("halt")
        cancelled = time.monotonic()
        collector.wait(300)
        print(f"\nmeasured: cancel -> Message-API collector exited in {time.monotonic() - cancelled:.1f} s")
        sites[0].wait(300)
        print(f"measured: cancel -> its local execution exited in {time.monotonic() - cancelled:.1f} s")
    finally:
        reap([collector, *sites], terminate=True)
    assert collector.returncode == 0 and sites[0].returncode == 0, logs_of(fl.logs)
    assert fl.repo.get_task("halt").conditions[-1].reason == "Cancelled"
    forwarded = [
        line for line in (fl.logs / "collector.log").read_text().splitlines() if line.startswith("[ServerApp]")
    ]
    assert forwarded  # its output reaches the collector's log
    # Once: written there by the ServerApp itself, not also read back from the SuperLink.
    assert sum("Will load ServerApp" in line for line in forwarded) == 1, "\n".join(forwarded)
    # Once flrepo's logging is set up in the ServerApp, Flower's coloured console copy of each line is gone.
    ours = next(i for i, line in enumerate(forwarded) if re.match(r"\[ServerApp\] \d{4}-\d\d-\d\d ", line))
    assert not [line for line in forwarded[ours:] if "\x1b[" in line], "\n".join(forwarded)
