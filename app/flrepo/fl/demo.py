"""`flrepo demo`: federated training end to end on the embedded store, in about a minute.

Seeds the signed catalogue, registers an initial model, creates a task (FedAvg, 3 clients,
5 rounds), starts the training collector and three local executions as separate processes,
prints a table row per round while it runs, then the final accuracy on held-out data.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flrepo.client import RepositoryClient, calls
from flrepo.fl.catalogue import seed
from flrepo.fl.data import held_out
from flrepo.fl.trainer import SoftmaxRegression
from flrepo.fl.weights import from_npz, to_npz
from flrepo.server.embedded import EmbeddedMongo, api_server, free_port, reap
from flrepo.signing import Keyring, encode_key, new_key_pair


def fl_env(repo_url: str, trusted_keys: str) -> dict[str, str]:
    """The environment of a training collector and its local executions: the repository and the
    publishers' public keys (`id:base64,...`) only. They verify what they load; they cannot sign."""
    env = {
        **os.environ,
        "FLREPO_TRUSTED_KEYS": trusted_keys,
        "FLWR_TELEMETRY_ENABLED": "0",
        "GRPC_VERBOSITY": "ERROR",
        "FLREPO_URL": repo_url,
    }
    for name in ("FLREPO_SIGNING_KEY", "FLREPO_SIGNING_KEY_FILE", "FLREPO_SIGNING_KEY_ID"):
        env.pop(name, None)
    return env


def publisher(key_id: str = "demo") -> tuple[Keyring, str]:
    """A fresh Ed25519 publisher: its keyring (signs) and the FLREPO_TRUSTED_KEYS entry that verifies it."""
    private, public = new_key_pair()
    return Keyring.signer(key_id, private), f"{key_id}:{encode_key(public)}"


def start_training(
    repo_url: str, task_id: str, clients: int, env: dict[str, str], logs: Path, kill_client_after: float | None = None
) -> tuple[subprocess.Popen[bytes], list[subprocess.Popen[bytes]]]:
    """The collector and `clients` local executions as separate processes."""
    address = f"127.0.0.1:{free_port()}"
    cli = [sys.executable, "-m", "flrepo.cli"]
    collector = subprocess.Popen(
        [*cli, "collector", "--task", task_id, "--repo", repo_url, "--address", address],
        env=env,
        stdout=open(logs / "collector.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    workers = []
    for k in range(1, clients + 1):
        workers.append(
            subprocess.Popen(
                [
                    *cli,
                    "local-exec",
                    "--task",
                    task_id,
                    "--repo",
                    repo_url,
                    "--server",
                    address,
                    "--data",
                    f"digits:{k}/{clients}",
                ],
                env=env,
                stdout=open(logs / f"local-exec-{k}.log", "wb"),
                stderr=subprocess.STDOUT,
            )
        )
    return collector, workers


def digits_task(
    task_id: str, strategy: str = "fedavg", rounds: int = 5, clients: int = 3, **overrides: Any
) -> dict[str, Any]:
    """The demo's task plan: the digits model, min-max scaling, `clients` participants."""
    return {
        "task_id": task_id,
        "model": {"model_name": "digits", "model_version": "v1"},
        "strategy": {"strategy_name": strategy},
        "transformations": [{"id": "flrepo.min_max_scaling", "parameters": {"low": 0, "high": 16}}],
        "rounds": rounds,
        "min_participants": clients,
        "round_timeout": 120,
        "training": {"epochs": 2, "batch_size": 32, "learning_rate": 0.5},
        **overrides,
    }


def register_model(repo: RepositoryClient, name: str, version: str) -> None:
    repo.create_model(name, version, "numpy", description="softmax regression on 8x8 digits", features=64, classes=10)
    initial = io.BytesIO(to_npz(SoftmaxRegression().initial_weights(64, 10)))
    repo.upload_model(name, version, initial, filename="initial.npz")


def accuracy(weights_npz: bytes) -> float:
    _, _, x_test, y_test = held_out()
    _, metrics = SoftmaxRegression().evaluate(from_npz(weights_npz), x_test / 16.0, y_test)
    return metrics["accuracy"]


def watch(repo: RepositoryClient, task_id: str, collector: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Print each finished round; return the task once it has finished."""
    shown = 0  # the last round printed (the task shows its most recent rounds only)
    deadline = time.monotonic() + timeout
    print(f"{'round':>5} {'participants':>12} {'loss':>8} {'accuracy':>9} {'seconds':>8}")
    while True:
        task = repo.get_task(task_id).model_dump()
        for record in task["history"]:
            if record["round"] <= shown:
                continue
            acc = record["metrics"].get("accuracy")
            print(
                f"{record['round']:>5} {record['participants']:>12} {record['loss'] or 0:>8.4f} "
                f"{acc if acc is None else f'{acc:.4f}':>9} {record.get('duration_s') or 0:>8.2f}",
                flush=True,
            )
        shown = max([shown, *(record["round"] for record in task["history"])])
        if task["phase"] in ("Succeeded", "Failed"):
            return task
        if collector.poll() is not None and task["phase"] not in ("Succeeded", "Failed"):
            time.sleep(1)
            return repo.get_task(task_id).model_dump()
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} did not finish within {timeout:.0f} s")
        time.sleep(0.5)


def main(rounds: int = 5, clients: int = 3, strategy: str = "fedavg") -> int:
    started = time.monotonic()
    keyring, trusted = publisher("demo")
    with tempfile.TemporaryDirectory(prefix="flrepo-demo-") as tmp_name:
        tmp = Path(tmp_name)
        with EmbeddedMongo(tmp / "db", log_file=tmp / "ferretdb.log") as mongo, api_server(tmp, mongo.url) as (url, _):
            print(f"repository: {url} (embedded FerretDB), logs in {tmp}")
            env = fl_env(url, trusted)
            repo = RepositoryClient(url, keyring=keyring)
            report = seed(repo)
            print(f"catalogue: {len(report['added'])} signed items added")
            register_model(repo, "digits", "v1")
            task = repo.create_task(digits_task("digits-demo", strategy, rounds, clients)).model_dump()
            initial = accuracy(repo.read(calls.model_file("digits", "v1")))
            print(
                f"task {task['task_id']}: {strategy}, {clients} local executions, {rounds} rounds; "
                f"initial accuracy {initial:.4f}"
            )
            collector, workers = start_training(url, task["task_id"], clients, env, tmp)
            try:
                final_task = watch(repo, task["task_id"], collector, timeout=600)
            finally:
                reap([collector, *workers], timeout=30)
            if final_task["phase"] != "Succeeded":
                reason = final_task["conditions"][-1] if final_task["conditions"] else {}
                print(f"task {final_task['phase']}: {reason.get('reason')}: {reason.get('message')}")
                return 1
            result = final_task["result"]
            path = calls.weights_download(result["model_name"], result["model_version"], result["training_id"])
            final = accuracy(repo.read(path))
            print(f"final accuracy on held-out data: {final:.4f} (initial {initial:.4f})")
            print(f"training result: GET {url}/training-results/{result['model_name']}/{result['model_version']}")
            print(f"weights: curl -o weights.npz {url}{path}")
            print(f"wall time {time.monotonic() - started:.1f} s")
            repo.close()
    return 0
