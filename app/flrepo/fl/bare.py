"""The same training with bare Flower and no repository: the baseline of the round-overhead benchmark.

`python -m flrepo.fl.bare server ADDRESS ROUNDS CLIENTS` / `python -m flrepo.fl.bare client ADDRESS K/N`:
the same FedAvg settings, data, transformation and trainer as a repository task, configured in code.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import flwr
from flwr.server.strategy import FedAvg

from flrepo.fl.collector import ReportingStrategy, configure
from flrepo.fl.data import parse_partition, partition
from flrepo.fl.local_exec import LocalExecution
from flrepo.fl.trainer import SoftmaxRegression

TRAINING = {"epochs": 2, "batch_size": 32, "learning_rate": 0.5}


class _NoRepo:
    def update_task_status(self, *args: object, **kwargs: object) -> None:
        return None


def server(address: str, rounds: int, clients: int) -> None:
    strategy = FedAvg()
    task = {"participants_ratio": 1.0, "min_participants": clients, "strategy_conf": {}}
    configure(strategy, task, SoftmaxRegression().initial_weights(64, 10))
    wrapped = ReportingStrategy(strategy, _NoRepo(), "bare", dict(TRAINING))  # type: ignore[arg-type]
    flwr.server.start_server(
        server_address=address, config=flwr.server.ServerConfig(num_rounds=rounds, round_timeout=120), strategy=wrapped
    )


def client(address: str, spec: str) -> None:
    index, parts = parse_partition(f"digits:{spec}")
    x, y = partition(index, parts)
    local = LocalExecution(SoftmaxRegression(), x / 16.0, y, seed=index)
    flwr.client.start_client(server_address=address, client=local.to_client(), insecure=True, max_wait_time=60)


if __name__ == "__main__":
    role, address, *rest = sys.argv[1:]
    if role == "server":
        server(address, int(rest[0]), int(rest[1]))
    else:
        client(address, rest[0])
