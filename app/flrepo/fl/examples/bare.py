"""The same training with bare Flower and no repository: the baseline of the round-overhead benchmark.

`python -m flrepo.fl.examples.bare server ADDRESS ROUNDS CLIENTS LIBRARY MODEL_FILE` and
`python -m flrepo.fl.examples.bare client ADDRESS K/N LIBRARY MODEL_FILE`: the same FedAvg, initial model,
data split, scaling and framework client as a repository task, configured in code, with nothing
reported, checkpointed or downloaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import flwr
from flwr.common import ndarrays_to_parameters
from flwr.server.strategy import FedAvg

from flrepo.fl.core.trainer import SiteTrainer
from flrepo.fl.examples.data import parse_partition, partition
from flrepo.fl.examples.digits_models import TRAINING
from flrepo.fl.frameworks import Training, open_model
from flrepo.fl.legacy.participant import FlowerClient
from flrepo.fl.strategy_setup import weighted_average


def server(address: str, rounds: int, clients: int, library: str, model_file: str) -> None:
    model = open_model(library, Path(model_file))
    training = Training.from_config(TRAINING[library])
    strategy = FedAvg(
        min_available_clients=clients,
        min_fit_clients=clients,
        min_evaluate_clients=clients,
        initial_parameters=ndarrays_to_parameters(model.get_weights()),
        on_fit_config_fn=lambda server_round: {**training.as_config(), "server_round": server_round},
        fit_metrics_aggregation_fn=weighted_average,
        evaluate_metrics_aggregation_fn=weighted_average,
    )
    flwr.server.start_server(
        server_address=address, config=flwr.server.ServerConfig(num_rounds=rounds, round_timeout=120), strategy=strategy
    )


def client(address: str, spec: str, library: str, model_file: str) -> None:
    index, parts = parse_partition(f"digits:{spec}")
    x, y = partition(index, parts)
    model = open_model(library, Path(model_file))
    local = FlowerClient(SiteTrainer.split(model, x / 16.0, y, Training.from_config(TRAINING[library]), seed=index))
    flwr.client.start_client(server_address=address, client=local.to_client(), insecure=True, max_wait_time=60)


if __name__ == "__main__":
    role, address, *rest = sys.argv[1:]
    if role == "server":
        server(address, int(rest[0]), int(rest[1]), rest[2], rest[3])
    else:
        client(address, rest[0], rest[1], rest[2])
