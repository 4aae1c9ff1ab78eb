"""Checkpoints at work: a collector killed mid-task is restarted and resumes after its last
checkpoint; the best round can be published instead of the last."""

from __future__ import annotations

import io
import signal
import time

import numpy as np

from flrepo.fl.demo import (
    digits_task,
    held_out_accuracy,
    register_model,
    start_collector,
    start_training,
    write_partitions,
)
from flrepo.fl.frameworks import open_model
from flrepo.fl.weights import from_npz
from flrepo.server.embedded import free_port, reap
from tests.helpers import logs_of, run_training

ROUNDS = 4
# Two local epochs a round. The kill waits for round 2's report and the assertions follow whichever
# checkpoint the restarted collector resumed from (2 or 3), so no round needs to be slow enough to be
# caught inside: five epochs a round were ~8 s of each round on a busy machine.
TRAINING = {"epochs": 2, "batch_size": 32, "learning_rate": 0.01, "optimizer": "adam"}


def _plan(task_id, **extra):
    return digits_task(task_id, "fedavg", rounds=ROUNDS, clients=2, framework="pytorch", training=TRAINING, **extra)


def _trained(fl, tmp_path, task):
    path = tmp_path / f"{task['task_id']}.pt2"
    fl.repo.download_model("digits", task["result"]["output_model_version"], path)
    return path


def test_a_killed_collector_resumes_after_its_last_checkpoint(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "pytorch", tmp_path)
    data = write_partitions(tmp_path, 2)

    # The same task uninterrupted, for comparison: it trains beside the one cut short (its own logs).
    fl.repo.create_task(_plan("whole"))
    whole_logs = fl.logs / "whole"
    whole_logs.mkdir()
    whole_collector, whole_sites = start_training(fl.url, "whole", data, fl.env, whole_logs)

    fl.repo.create_task(_plan("cut"))
    address = f"127.0.0.1:{free_port()}"
    killed = []

    def kill_after_round_2(task, processes):
        collector = processes[0]
        if not killed and task["current_round"] >= 2 and collector.poll() is None:
            collector.send_signal(signal.SIGKILL)
            killed.append(task["current_round"])

    # Every round written as it ends (no pause between writes): the kill must find the task mid-way.
    unpaced = {**fl.env, "FLREPO_ROUND_WRITE_SHARE": "1"}
    collector, workers = start_training(fl.url, "cut", data, unpaced, fl.logs, address=address)
    deadline = time.monotonic() + 900
    try:
        while not killed and collector.poll() is None:
            kill_after_round_2(fl.repo.get_task("cut").model_dump(mode="json"), [collector, *workers])
            assert time.monotonic() < deadline, logs_of(fl.logs)
            time.sleep(0.1)
        collector.wait(120)
        assert killed, "the collector ended before round 2 was reported\n" + logs_of(fl.logs)
        stale = fl.repo.get_task("cut")
        # What a dead collector leaves: a running task, mid-way (round 3 may have been reported before the kill).
        assert stale.phase == "Running" and 2 <= stale.current_round < ROUNDS, stale.current_round
        kept = {c.round for c in fl.repo.list_checkpoints("cut") if c.weights_id}  # those with their file
        # Started again on the same address: the local executions reconnect to it.
        again = start_collector(fl.url, "cut", fl.env, fl.logs, address)
        again.wait(900)
        whole_collector.wait(900)
    finally:
        reap([collector, *workers, *whole_sites, whole_collector], timeout=60, terminate=True)
    whole = fl.repo.get_task("whole").model_dump(mode="json")
    assert whole_collector.returncode == 0 and whole["phase"] == "Succeeded", logs_of(whole_logs)
    task = fl.repo.get_task("cut").model_dump(mode="json")
    assert again.returncode == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    resumed_from = task["resumed_from_round"]  # the newest checkpoint the dead collector left
    assert resumed_from == max(kept) and 2 <= resumed_from < ROUNDS, (resumed_from, kept)
    assert [c["reason"] for c in task["conditions"]] == ["ServerStarted", "Resumed", "TrainingComplete"]
    assert [h["round"] for h in task["history"]] == [1, 2, 3, 4]  # the rest run once, after the restart
    # The second server ran only the rounds after the checkpoint.
    assert f"num_rounds={ROUNDS - resumed_from}" in (fl.logs / "collector.log").read_text()

    resumed, uninterrupted = _trained(fl, tmp_path, task), _trained(fl, tmp_path, whole)
    shapes = [[w.shape for w in open_model("pytorch", path).get_weights()] for path in (resumed, uninterrupted)]
    assert shapes[0] == shapes[1]
    cut_accuracy = held_out_accuracy("pytorch", resumed)
    whole_accuracy = held_out_accuracy("pytorch", uninterrupted)
    assert abs(cut_accuracy - whole_accuracy) < 0.06 and cut_accuracy > 0.8, (cut_accuracy, whole_accuracy)


def test_the_best_round_is_published_when_asked(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    plan = digits_task("best", "fedavg", rounds=4, clients=2, publish="best", checkpoints_kept=1)
    plan["training"] = {"epochs": 1, "batch_size": 32, "learning_rate": 0.5}
    fl.repo.create_task(plan)
    task, code = run_training(fl, "best", ["digits:1/2", "digits:2/2"])
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    losses = {h["round"]: h["loss"] for h in task["history"]}
    best_round = min(losses, key=losses.get)
    assert task["best"]["round"] == best_round and task["best"]["loss"] == losses[best_round]
    # One newest checkpoint kept, and the best one besides it.
    assert sorted(c.round for c in fl.repo.list_checkpoints("best")) == sorted({best_round, 4})
    result = fl.repo.get_training_result("digits", "v1", "best").results
    assert result["published_round"] == best_round and result["best_round"] == best_round
    checkpoint = io.BytesIO()
    fl.repo.download_checkpoint("best", best_round, checkpoint)
    published = from_npz(fl.repo.read(f"/model/digits/{task['result']['output_model_version']}"))
    assert all(np.array_equal(a, b) for a, b in zip(published, from_npz(checkpoint.getvalue()), strict=True))
