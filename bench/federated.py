"""4. Federated round overhead: a PyTorch task through the repository (signed strategy, model and
transformation downloads, status reports, a checkpoint per round, the result and the published
model) vs. bare Flower with the same model, FedAvg, clients, data and training; and what one
checkpoint costs."""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flrepo.server.embedded import api_server, free_port

FRAMEWORK = "pytorch"


def federated(mongo_url: str, tmp: Path, rounds: int, clients: int, repeats: int) -> dict[str, Any]:
    """Wall time of the task through the repository vs. bare Flower, best of `repeats`, alternated."""
    import secrets as _secrets

    from flrepo.client import RepositoryClient
    from flrepo.fl.catalogue import seed
    from flrepo.fl.demo import digits_task, fl_env, register_model, start_training
    from flrepo.signing import Keyring

    repo_times, bare_times = [], []
    env_db = {"FLREPO_DB_NAME": "fl", "FLREPO_GRIDFS_DB_NAME": "fl_grid", "FLREPO_LOG_LEVEL": "ERROR"}
    with api_server(tmp, mongo_url, **env_db) as (url, _):
        key = _secrets.token_hex(16)
        repo = RepositoryClient(url, keyring=Keyring("bench", {"bench": key.encode()}))
        seed(repo)
        initial = register_model(repo, "digits", "v1", FRAMEWORK, tmp)
        env = {**fl_env(url, key), "FLREPO_SIGNING_KEY_ID": "bench"}
        env_bare = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "GRPC_VERBOSITY": "ERROR"}
        bare = [sys.executable, "-m", "flrepo.fl.bare"]
        data = [f"digits:{k}/{clients}" for k in range(1, clients + 1)]
        for i in range(repeats):
            # Alternate the two so drift in the machine's speed hits both alike.
            started = time.monotonic()
            repo.create_task(digits_task(f"bench-{i}", "fedavg", rounds, clients, FRAMEWORK))
            collector, workers = start_training(url, f"bench-{i}", data, env, tmp)
            for proc in [collector, *workers]:
                proc.wait(600)
            if repo.get_task(f"bench-{i}").phase != "Succeeded":
                raise RuntimeError(f"repository task bench-{i} did not succeed; logs in {tmp}")
            repo_times.append(time.monotonic() - started)

            started = time.monotonic()
            address = f"127.0.0.1:{free_port()}"
            with open(tmp / "bare.log", "ab") as log:
                server = [*bare, "server", address, str(rounds), str(clients), FRAMEWORK, str(initial)]
                procs = [subprocess.Popen(server, env=env_bare, stdout=log, stderr=subprocess.STDOUT)]
                procs += [
                    subprocess.Popen(
                        [*bare, "client", address, f"{k}/{clients}", FRAMEWORK, str(initial)],
                        env=env_bare,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                    for k in range(1, clients + 1)
                ]
                for proc in procs:
                    proc.wait(600)
            bare_times.append(time.monotonic() - started)
        rounds_s = [h.duration_s for h in repo.get_task(f"bench-{repeats - 1}").history if h.duration_s]
        checkpoint_ms = checkpoint_cost(repo, f"bench-{repeats - 1}", initial)
        repo.close()
    repo_time, bare_time = min(repo_times), min(bare_times)
    return {
        "framework": FRAMEWORK,
        "rounds": rounds,
        "clients": clients,
        "repo_s": repo_time,
        "bare_s": bare_time,
        "ratio": repo_time / bare_time,
        "repeats": repeats,
        "round_s": statistics.median(rounds_s) if rounds_s else 0.0,
        "checkpoint_ms": checkpoint_ms,
    }


def checkpoint_cost(repo: Any, task_id: str, initial: Path, samples: int = 20) -> float:
    """Median ms of one checkpoint as the collector writes it (register, then upload the .npz) of
    this model's weights, on a running copy of the task."""
    from flrepo.fl.frameworks import open_model
    from flrepo.fl.weights import to_npz

    data = to_npz(open_model(FRAMEWORK, initial).get_weights())
    plan = repo.get_task(task_id).model_dump(mode="json", exclude_none=True)
    fields = ("model", "strategy", "transformations", "rounds", "training")
    copy = repo.create_task({"task_id": f"{task_id}-checkpoints", **{k: plan[k] for k in fields}, "rounds": samples})
    repo.update_task_status(copy.task_id, phase="Running")
    times = []
    for n in range(1, samples + 1):
        started = time.perf_counter()
        repo.create_checkpoint(copy.task_id, n, loss=1.0 / n)
        repo.upload_checkpoint(copy.task_id, n, io.BytesIO(data), filename=f"round-{n}.npz")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
