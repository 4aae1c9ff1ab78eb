"""4. Federated round overhead: a PyTorch task through the repository (signed strategy, model and
transformation downloads, status reports, a checkpoint per round, the result and the published
model) vs. bare Flower with the same model, FedAvg, clients, data and training; and what one
checkpoint costs. With `message=True` (`make bench-fl`), also the same task on the Message-API
runtime: Flower's SuperLink/SuperNode with TLS and SuperNode authentication."""

from __future__ import annotations

import io
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flrepo.server.embedded import api_server, free_port

FRAMEWORK = "pytorch"


def federated(
    mongo_url: str, tmp: Path, rounds: int, clients: int, repeats: int, message: bool = False
) -> dict[str, Any]:
    """Wall time of the task through the repository vs. bare Flower (and, with `message`, through the
    repository on the Message-API runtime), best of `repeats`, alternated."""
    from flrepo.client import RepositoryClient
    from flrepo.fl.catalogue import seed
    from flrepo.fl.demo import digits_task, fl_env, publisher, register_model, start_collector

    repo_times, bare_times, message_times = [], [], []
    env_db = {"FLREPO_DB_NAME": "fl", "FLREPO_GRIDFS_DB_NAME": "fl_grid", "FLREPO_LOG_LEVEL": "ERROR"}
    with api_server(tmp, mongo_url, **env_db) as (url, _):
        keyring, trusted = publisher("bench")
        repo = RepositoryClient(url, keyring=keyring)
        seed(repo)
        initial = register_model(repo, "digits", "v1", FRAMEWORK, tmp)
        env = fl_env(url, trusted)
        env_bare = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "GRPC_VERBOSITY": "ERROR"}
        bare = [sys.executable, "-m", "flrepo.fl.examples.bare"]
        data = [f"digits:{k}/{clients}" for k in range(1, clients + 1)]
        for i in range(repeats):
            # Alternate the two so drift in the machine's speed hits both alike.
            started = time.monotonic()
            repo.create_task(digits_task(f"bench-{i}", "fedavg", rounds, clients, FRAMEWORK))
            address = f"127.0.0.1:{free_port()}"
            collector = start_collector(url, f"bench-{i}", env, tmp, address)
            # Clients start once the server listens, in both paths: Flower's connect back-off would
            # otherwise decide the figures.
            wait_listening(address)
            workers = [local_exec(url, f"bench-{i}", address, spec, k, env, tmp) for k, spec in enumerate(data, 1)]
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
                wait_listening(address)
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

            if message:
                message_times.append(message_task(repo, url, f"bench-msg-{i}", rounds, clients, data, env, tmp))
        rounds_s = [h.duration_s for h in repo.get_task(f"bench-{repeats - 1}").history if h.duration_s]
        checkpoint_ms = checkpoint_cost(repo, f"bench-{repeats - 1}", initial)
        repo.close()
    repo_time, bare_time = min(repo_times), min(bare_times)
    if message_times:
        message_s: float | None = min(message_times)
    else:
        message_s = None
    return {
        "message_s": message_s,
        "message_ratio": message_s / repo_time if message_s else None,
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


def message_task(
    repo: Any, url: str, task_id: str, rounds: int, clients: int, data: list[str], env: dict[str, str], tmp: Path
) -> float:
    """Seconds from creating the task to every process's exit, on the Message-API runtime: the
    collector's SuperLink serves TLS and admits only the task's participant keys; the local
    executions (SuperNodes) start once it has published its address, and find it through the task."""
    from tests.helpers import make_participant_key, make_tls

    work = tmp / task_id
    work.mkdir()
    tls = make_tls(work / "tls")
    keys = [work / f"site-{k}" for k in range(1, clients + 1)]
    allowed = [make_participant_key(path) for path in keys]
    from flrepo.fl.demo import digits_task, start_collector

    started = time.monotonic()
    repo.create_task(
        {**digits_task(task_id, "message-fedavg", rounds, clients, FRAMEWORK), "participant_keys": allowed}
    )
    address = f"127.0.0.1:{free_port()}"
    collector = start_collector(url, task_id, env, tmp, address, ["--tls-dir", str(tls)])
    # As the legacy path waits for its server to listen: the SuperLink is up once it is published.
    deadline = time.monotonic() + 120
    while not repo.get_task(task_id).server_address:
        if time.monotonic() > deadline or collector.poll() is not None:
            raise RuntimeError(f"Message-API task {task_id}: no server address; logs in {tmp}")
        time.sleep(0.05)
    workers = [
        local_exec(url, task_id, None, spec, k, env, tmp, ["--participant-key", str(keys[k - 1])])
        for k, spec in enumerate(data, 1)
    ]
    for proc in [collector, *workers]:
        proc.wait(600)
    if repo.get_task(task_id).phase != "Succeeded":
        raise RuntimeError(f"Message-API task {task_id} did not succeed; logs in {tmp}")
    return time.monotonic() - started


def wait_listening(address: str, timeout: float = 120) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {address}")


def local_exec(
    url: str,
    task_id: str,
    address: str | None,
    spec: str,
    k: int,
    env: dict[str, str],
    logs: Path,
    options: list[str] | None = None,
) -> Any:
    """A local execution; without `address`, it finds the collector through the task."""
    command = [sys.executable, "-m", "flrepo.cli", "local-exec", "--task", task_id, "--repo", url]
    command += [*(["--server", address] if address else []), "--data", spec, "--seed", str(k), *(options or [])]
    with open(logs / f"local-exec-{k}.log", "ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


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


def main() -> int:
    """`python bench/federated.py [--repeats 3] [--out bench/RESULTS.md]`: this section alone."""
    import argparse
    import tempfile

    from bench.report import machine, record

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--out", type=Path, help="prepend the section to this Markdown file")
    args = parser.parse_args()
    from flrepo.server.embedded import EmbeddedMongo

    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedMongo(Path(tmp_name) / "db") as mongo:
        fed = federated(mongo.url, Path(tmp_name), args.rounds, args.clients, args.repeats, message=True)
    share = 100 * fed["checkpoint_ms"] / 1000 / max(fed["round_s"], 1e-9)
    text = "\n".join(
        [
            f"## Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — federated round overhead "
            f"(`python bench/federated.py --repeats {args.repeats}`)",
            "",
            f"Machine: {machine()}.",
            "",
            f"A {fed['framework']} MLP (64-32-10) on the digits, FedAvg, {fed['clients']} local executions, "
            f"{fed['rounds']} rounds, 2 local epochs per round, each process started cold (imports torch).",
            "",
            f"| path | wall time (best of {fed['repeats']}) |",
            "|---|---:|",
            f"| through the repository (legacy runtime, as aerOS: gRPC, plaintext) | {fed['repo_s']:.2f} s |",
            f"| bare Flower | {fed['bare_s']:.2f} s |",
            f"| **ratio** repository / bare (goal ≤ 1.15) | **{fed['ratio']:.2f}** |",
            f"| through the repository, Message-API runtime (SuperLink/SuperNode, TLS, SuperNode auth) "
            f"| {fed['message_s']:.2f} s |",
            f"| **ratio** Message API / legacy | **{fed['message_ratio']:.2f}** |",
            "",
            f"One checkpoint (register + upload the round's .npz): median **{fed['checkpoint_ms']:.1f} ms**; "
            f"a round's median is {fed['round_s']:.2f} s, so checkpoints cost {share:.1f} % of a round.",
            "",
        ]
    )
    print(text)
    if args.out:
        record(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
