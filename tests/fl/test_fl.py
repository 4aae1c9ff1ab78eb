"""Federated training end to end: a real API process, collector and local executions as processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from flrepo.client import RepositoryClient, calls
from flrepo.fl.catalogue import seed
from flrepo.fl.data import parse_partition, partition
from flrepo.fl.demo import accuracy, digits_task, fl_env, publisher, register_model, start_training
from flrepo.fl.weights import from_npz
from flrepo.server.embedded import api_server, reap

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture
def fl(settings, tmp_path):
    env = {"FLREPO_DB_NAME": settings.db_name, "FLREPO_GRIDFS_DB_NAME": settings.gridfs_db_name}
    with api_server(tmp_path, settings.mongodb_url, **env) as (url, _):
        keyring, trusted = publisher("test")
        repo = RepositoryClient(url, keyring=keyring)
        seed(repo)
        register_model(repo, "digits", "v1")
        env = fl_env(url, trusted)  # the public key only: they verify, they cannot sign
        yield repo, url, env, tmp_path
        repo.close()


def _task(repo, task_id, strategy="fedavg", rounds=2, clients=2, **extra):
    return repo.create_task(digits_task(task_id, strategy, rounds, clients, round_timeout=60, **extra))


def _run(fl, task_id, clients, timeout=120, during=None):
    repo, url, env, logs = fl
    collector, workers = start_training(url, task_id, clients, env, logs)
    deadline = time.monotonic() + timeout
    try:
        while collector.poll() is None:
            if during:
                during(repo.get_task(task_id).model_dump(mode="json"), workers)
            assert time.monotonic() < deadline, "collector did not finish"
            time.sleep(0.2)
    finally:
        reap([collector, *workers], timeout=30)
    return repo.get_task(task_id).model_dump(mode="json"), collector.returncode


def _logs(logs: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(logs.glob("*.log")))


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedmedian"])
def test_training_end_to_end(fl, strategy):
    repo, _, _, logs = fl
    _task(repo, f"t-{strategy}", strategy=strategy)
    initial = accuracy(repo.read(calls.model_file("digits", "v1")))
    task, code = _run(fl, f"t-{strategy}", clients=2)
    assert code == 0 and task["phase"] == "Succeeded", _logs(logs)
    assert [c["type"] for c in task["conditions"]] == ["Running", "Succeeded"]
    assert task["start_time"] and task["completion_time"] and task["current_round"] == 2
    assert [h["round"] for h in task["history"]] == [1, 2]
    assert all(h["participants"] == 2 and h["failures"] == 0 for h in task["history"])
    # Each local execution trains on 80 % of its partition; the task records those sample counts.
    expected = sorted(int(len(partition(k, 2)[1]) * 0.8) for k in range(2))
    assert sorted(p["samples"] for p in task["participants"]) == expected

    result = repo.list_model_training_results("digits", "v1")[0].model_dump()
    assert result["training_id"] == f"t-{strategy}" and result["results"]["rounds"] == 2
    assert isinstance(result["results"]["final_loss"], float) and result["results"]["strategy"] == strategy
    assert task["result"] == {"model_name": "digits", "model_version": "v1", "training_id": f"t-{strategy}"}
    weights = repo.read(calls.weights_download("digits", "v1", f"t-{strategy}"))
    final_weights, initial_weights = from_npz(weights), from_npz(repo.read(calls.model_file("digits", "v1")))
    assert not np.allclose(final_weights[0], initial_weights[0])
    # Measured: initial ~0.11, after two rounds ~0.88-0.92 on the held-out digits.
    final = accuracy(weights)
    assert final > 0.75 and final > initial + 0.5, (initial, final)


def test_tampered_strategy_fails_the_task_with_a_clear_reason(fl, raw_db):
    repo, _, _, logs = fl
    chunk = raw_db[1]["fs.chunks"].find_one(
        {"files_id": raw_db[1]["fs.files"].find_one({"filename": "fedavg.pkl"})["_id"]}
    )
    data = bytearray(chunk["data"])
    data[len(data) // 2] ^= 0x01
    raw_db[1]["fs.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(data)}})
    # The server's own sha256 no longer matches either: the client refuses before any signature check.
    raw_db[1]["fs.files"].update_one({"filename": "fedavg.pkl"}, {"$unset": {"sha256": ""}})
    raw_db[0]["strategies"].update_one({"strategy_name": "fedavg"}, {"$unset": {"sha256": ""}})
    _task(repo, "t-tampered")
    task, code = _run(fl, "t-tampered", clients=1, timeout=60)
    assert code == 1 and task["phase"] == "Failed", _logs(logs)
    assert task["conditions"][-1]["reason"] == "SignatureError"
    assert "does not match its signed size and sha256" in task["conditions"][-1]["message"]
    assert list(repo.list_training_results()) == []


def test_a_client_that_dies_is_tolerated(fl):
    repo, _, _, logs = fl
    # Slow rounds (many epochs) so one local execution can be killed while training goes on.
    _task(
        repo,
        "t-dies",
        strategy="fault-tolerant-fedavg",
        rounds=4,
        clients=2,
        training={"epochs": 150, "batch_size": 32, "learning_rate": 0.5},
    )
    killed = []

    def kill_one(task, workers):
        if not killed and task["current_round"] >= 1:
            workers[2].kill()
            killed.append(task["current_round"])

    task, code = _run(fl, "t-dies", clients=3, timeout=180, during=kill_one)
    assert killed, "the training ended before a client could be killed"
    assert code == 0 and task["phase"] == "Succeeded", _logs(logs)
    assert [h["round"] for h in task["history"]] == [1, 2, 3, 4]
    assert task["history"][-1]["participants"] == 2


def test_data_partitions_are_disjoint_and_non_iid():
    parts = [partition(k, 3) for k in range(3)]
    sizes = [len(y) for _, y in parts]
    assert min(sizes) > 300
    for k, (_, y) in enumerate(parts):
        share = np.mean(y % 3 == k)
        assert 0.6 < share < 0.8, share  # 70 % from "its" labels
        assert set(np.unique(y)) == set(range(10))
    assert parse_partition("digits:2/3") == (1, 3)
    with pytest.raises(ValueError):
        parse_partition("digits:4/3")
