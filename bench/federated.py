"""4. Federated round overhead: a task through the repository vs. bare Flower, same strategy,
clients and data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from flrepo.server.embedded import api_server, free_port


def federated(mongo_url: str, tmp: Path, rounds: int, clients: int, repeats: int) -> dict[str, float]:
    """Wall time of a FedAvg task through the repository vs. the same training with bare Flower."""
    from flrepo.client import RepositoryClient
    from flrepo.fl.catalogue import seed
    from flrepo.fl.demo import digits_task, fl_env, publisher, register_model, start_training

    repo_times, bare_times = [], []
    env_db = {"FLREPO_DB_NAME": "fl", "FLREPO_GRIDFS_DB_NAME": "fl_grid", "FLREPO_LOG_LEVEL": "ERROR"}
    with api_server(tmp, mongo_url, **env_db) as (url, _):
        keyring, trusted = publisher("bench")
        repo = RepositoryClient(url, keyring=keyring)
        seed(repo)
        register_model(repo, "digits", "v1")
        env = fl_env(url, trusted)
        env_bare = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "GRPC_VERBOSITY": "ERROR"}
        bare = [sys.executable, "-m", "flrepo.fl.bare"]
        for i in range(repeats):
            # Alternate the two so drift in the machine's speed hits both alike.
            started = time.monotonic()
            repo.create_task(digits_task(f"bench-{i}", "fedavg", rounds, clients))
            collector, workers = start_training(url, f"bench-{i}", clients, env, tmp)
            for proc in [collector, *workers]:
                proc.wait(300)
            if repo.get_task(f"bench-{i}").phase != "Succeeded":
                raise RuntimeError(f"repository task bench-{i} did not succeed; logs in {tmp}")
            repo_times.append(time.monotonic() - started)

            started = time.monotonic()
            address = f"127.0.0.1:{free_port()}"
            with open(tmp / "bare.log", "ab") as log:
                procs = [
                    subprocess.Popen(
                        [*bare, "server", address, str(rounds), str(clients)],
                        env=env_bare,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                ]
                procs += [
                    subprocess.Popen(
                        [*bare, "client", address, f"{k}/{clients}"], env=env_bare, stdout=log, stderr=subprocess.STDOUT
                    )
                    for k in range(1, clients + 1)
                ]
                for proc in procs:
                    proc.wait(300)
            bare_times.append(time.monotonic() - started)
        repo.close()
    repo_time, bare_time = min(repo_times), min(bare_times)
    return {
        "rounds": rounds,
        "clients": clients,
        "repo_s": repo_time,
        "bare_s": bare_time,
        "ratio": repo_time / bare_time,
        "repeats": repeats,
    }
