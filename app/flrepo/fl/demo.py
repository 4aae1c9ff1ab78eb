"""`flrepo demo`: federated training end to end on the embedded store, in about a minute.

Seeds the signed catalogue, registers an initial model of the chosen framework (numpy, pytorch or
keras), writes each local execution's share of the digits data as its own CSV file, creates a task
(FedAvg on Flower's Message API, 3 clients, 5 rounds), starts the training collector and the local
executions as separate processes, prints a table row per round while it runs, then the held-out
accuracy of the trained model the task published, loaded from its native file. A Message-API task
(the default, `message-fedavg`) runs over TLS with SuperNode authentication, on a throw-away CA and
site keys; a legacy strategy (`--strategy fedavg`, as aerOS) on Flower's gRPC server in plaintext.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flrepo.client import RepositoryClient, calls
from flrepo.fl.catalogue import MESSAGE_STRATEGIES, seed
from flrepo.fl.examples.credentials import participant_key, throwaway_tls
from flrepo.fl.examples.data import held_out, partition
from flrepo.fl.examples.digits_models import SUFFIX, TRAINING, write_initial
from flrepo.fl.frameworks import open_model
from flrepo.server.embedded import EmbeddedMongo, api_server, free_port, reap
from flrepo.signing import Keyring, encode_key, new_key_pair

CLI = [sys.executable, "-m", "flrepo.cli"]


def fl_env(repo_url: str, trusted_keys: str) -> dict[str, str]:
    """The environment of a training collector and its local executions: the repository and the
    publishers' public keys (`id:base64,...`); they verify what they load and cannot sign code. The
    collector gets a key of its own for its discovery record (FLREPO_COLLECTOR_KEY), which the sites
    trust (one environment for both here: in a deployment only the collector holds that key)."""
    collector_private, collector_public = new_key_pair()
    env = {
        **os.environ,
        "FLREPO_TRUSTED_KEYS": f"{trusted_keys},collector:{encode_key(collector_public)}",
        "FLREPO_COLLECTOR_KEY": encode_key(collector_private),
        "FLREPO_COLLECTOR_KEY_ID": "collector",
        "FLWR_TELEMETRY_ENABLED": "0",
        "GRPC_VERBOSITY": "ERROR",
        "FLREPO_URL": repo_url,
    }
    for name in ("FLREPO_SIGNING_KEY", "FLREPO_SIGNING_KEY_FILE", "FLREPO_SIGNING_KEY_ID", "FLREPO_COLLECTOR_KEY_FILE"):
        env.pop(name, None)
    return env


def publisher(key_id: str = "demo") -> tuple[Keyring, str]:
    """A fresh Ed25519 publisher: its keyring (signs) and the FLREPO_TRUSTED_KEYS entry that verifies it."""
    private, public = new_key_pair()
    return Keyring.signer(key_id, private), f"{key_id}:{encode_key(public)}"


def start_training(
    repo_url: str,
    task_id: str,
    data: list[str],
    env: dict[str, str],
    logs: Path,
    address: str | None = None,
    collector_options: list[str] | None = None,
    site_options: list[list[str]] | None = None,
) -> tuple[subprocess.Popen[bytes], list[subprocess.Popen[bytes]]]:
    """The collector and one local execution per `data` entry (a file or digits:K/N), as processes.
    The local executions find the collector through the task's status (no --server)."""
    address = address or f"127.0.0.1:{free_port()}"
    collector = start_collector(repo_url, task_id, env, logs, address, collector_options)
    options = site_options or []
    workers = [
        start_local_exec(repo_url, task_id, spec, env, logs, k, options[k - 1] if k <= len(options) else None)
        for k, spec in enumerate(data, start=1)
    ]
    return collector, workers


def start_local_exec(
    repo_url: str, task_id: str, data: str, env: dict[str, str], logs: Path, k: int, options: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """Local execution number `k` on `data`, with its own log file."""
    command = [*CLI, "local-exec", "--task", task_id, "--repo", repo_url, "--data", data, "--seed", str(k)]
    with open(logs / f"local-exec-{k}.log", "ab") as log:
        return subprocess.Popen([*command, *(options or [])], env=env, stdout=log, stderr=subprocess.STDOUT)


def start_collector(
    repo_url: str, task_id: str, env: dict[str, str], logs: Path, address: str, options: list[str] | None = None
) -> subprocess.Popen[bytes]:
    with open(logs / "collector.log", "ab") as log:
        return subprocess.Popen(
            [*CLI, "collector", "--task", task_id, "--repo", repo_url, "--address", address, *(options or [])],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def digits_task(
    task_id: str,
    strategy: str = "fedavg",
    rounds: int = 5,
    clients: int = 3,
    framework: str = "numpy",
    **overrides: Any,
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
        "training": TRAINING[framework.removesuffix("-h5")],
        **overrides,
    }


def register_model(repo: RepositoryClient, name: str, version: str, framework: str, workdir: Path) -> Path:
    """Register the digits model of `framework` with its initial file; return that file."""
    library = framework.removesuffix("-h5")
    path = write_initial(framework, workdir / f"initial{SUFFIX[framework]}")
    repo.create_model(
        name, version, library, description=f"{library} classifier of 8x8 digits", features=64, classes=10
    )
    repo.upload_model(name, version, path, filename=path.name)
    return path


def write_partitions(directory: Path, clients: int) -> list[str]:
    """Each local execution's share of the digits training data as its own CSV file (f0..f63, label)."""
    import numpy as np

    files = []
    for k in range(clients):
        x, y = partition(k, clients)
        path = directory / f"site-{k + 1}.csv"
        header = ",".join([*(f"f{i}" for i in range(x.shape[1])), "label"])
        np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt="%g")
        files.append(str(path))
    return files


def held_out_accuracy(library: str, model_file: Path) -> float:
    """Accuracy on the held-out digits of a model file, after the task's scaling (x / 16)."""
    from flrepo.fl.frameworks import Training

    _, _, x_test, y_test = held_out()
    _, metrics = open_model(library, model_file).evaluate(x_test / 16.0, y_test, Training())
    return float(metrics["accuracy"])


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


def secured(plan: dict[str, Any], workdir: Path) -> tuple[dict[str, Any], list[str], list[list[str]]]:
    """A Message-API `plan` with one throw-away key per site in its participant_keys, and the
    collector's (a throw-away CA) and the sites' options; a legacy plan as it is."""
    if plan["strategy"]["strategy_name"] not in MESSAGE_STRATEGIES:
        return plan, [], []
    keys = [workdir / f"site-{k}.key" for k in range(1, int(plan["min_participants"]) + 1)]
    plan = {**plan, "participant_keys": [participant_key(key) for key in keys]}
    return plan, ["--tls-dir", str(throwaway_tls(workdir / "tls"))], [["--participant-key", str(k)] for k in keys]


def main(rounds: int = 5, clients: int = 3, strategy: str = "message-fedavg", framework: str = "numpy") -> int:
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
            initial_file = register_model(repo, "digits", "v1", framework, tmp)
            data = write_partitions(tmp, clients)
            plan, collector_options, site_options = secured(
                digits_task("digits-demo", strategy, rounds, clients, framework), tmp
            )
            task = repo.create_task(plan).model_dump()
            initial = held_out_accuracy(framework, initial_file)
            print(
                f"task {task['task_id']}: {framework} model, {strategy}, {clients} local executions on their own "
                f"CSV files, {rounds} rounds; initial accuracy {initial:.4f}"
            )
            collector, workers = start_training(
                url, task["task_id"], data, env, tmp, collector_options=collector_options, site_options=site_options
            )
            try:
                final_task = watch(repo, task["task_id"], collector, timeout=600)
            finally:
                reap([collector, *workers], timeout=30)
            if final_task["phase"] != "Succeeded":
                reason = final_task["conditions"][-1] if final_task["conditions"] else {}
                print(f"task {final_task['phase']}: {reason.get('reason')}: {reason.get('message')}")
                return 1
            result = final_task["result"]
            name, version = result["model_name"], result["output_model_version"]
            trained = tmp / f"trained{SUFFIX[framework]}"
            repo.download_model(name, version, trained)
            final = held_out_accuracy(framework, trained)
            print(f"final accuracy on held-out data: {final:.4f} (initial {initial:.4f})")
            print(f"trained model: curl -o {trained.name} {url}{calls.model_file(name, version)}")
            print(f"training result: GET {url}/training-results/{result['model_name']}/{result['model_version']}")
            print(f"wall time {time.monotonic() - started:.1f} s")
            repo.close()
    return 0
