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
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flrepo.server.embedded import api_server, free_port

FRAMEWORK = "pytorch"
# Several sites share this machine's cores, and each process sizes its OpenMP / OpenBLAS pool for all
# of them: their threads spin at every barrier while the other sites' hold the cores. One two-epoch fit
# of the digits MLP took 0.03 s of CPU alone and up to 2.7 s beside two others, on both runtimes alike,
# at random: seconds of noise per run. A site on a machine of its own shares no cores; here each
# process gets one thread, on every path.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# A path's processes may take this long: Flower's stock SuperLink/SuperNode took over 600 s at load 25.
PROCESS_TIMEOUT_S = 2400.0


def federated(
    mongo_url: str,
    tmp: Path,
    rounds: int,
    clients: int,
    repeats: int,
    message: bool = False,
    stock_repeats: int | None = None,
    cpu: bool = False,
) -> dict[str, Any]:
    """Wall time of the task through the repository (legacy runtime) vs. bare Flower's legacy API;
    with `message`, also the task on the Message-API runtime (flrepo's) and on Flower's stock
    SuperLink/SuperNode (FLREPO_FLOWER_STOCK=1: same ServerApp and ClientApp) in the first
    `stock_repeats` repeats (default: all; it takes minutes a run). The paths alternate within each
    repeat, so drift in the machine's load hits all alike; medians are reported. With `cpu`, each
    path's CPU seconds per process role are printed as it ends (CpuSampler)."""
    from flrepo.client import RepositoryClient
    from flrepo.fl.catalogue import seed
    from flrepo.fl.demo import digits_task, fl_env, publisher, register_model, start_collector

    times: dict[str, list[float]] = {"repo": [], "bare": [], "message": [], "stock": []}
    in_rounds: dict[str, list[float]] = {"repo": [], "message": [], "stock": []}
    loads: list[float] = []
    sampler = CpuSampler() if cpu else None

    def cpu_report(path: str) -> None:
        if sampler is not None:
            print(cpu_line(path, sampler.take()), flush=True)

    env_db = {"FLREPO_DB_NAME": "fl", "FLREPO_GRIDFS_DB_NAME": "fl_grid", "FLREPO_LOG_LEVEL": "ERROR"}
    with api_server(tmp, mongo_url, **env_db) as (url, _):
        keyring, trusted = publisher("bench")
        repo = RepositoryClient(url, keyring=keyring)
        seed(repo)
        initial = register_model(repo, "digits", "v1", FRAMEWORK, tmp)
        env = {**fl_env(url, trusted), **ONE_THREAD}
        env_bare = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "GRPC_VERBOSITY": "ERROR", **ONE_THREAD}
        bare = [sys.executable, "-m", "flrepo.fl.examples.bare"]
        data = [f"digits:{k}/{clients}" for k in range(1, clients + 1)]
        for i in range(repeats):
            loads.append(os.getloadavg()[0])
            started = time.monotonic()
            repo.create_task(digits_task(f"bench-{i}", "fedavg", rounds, clients, FRAMEWORK))
            address = f"127.0.0.1:{free_port()}"
            collector = start_collector(url, f"bench-{i}", env, tmp, address)
            # Clients start once the server listens, in both paths: Flower's connect back-off would
            # otherwise decide the figures.
            wait_listening(address)
            workers = [local_exec(url, f"bench-{i}", address, spec, k, env, tmp) for k, spec in enumerate(data, 1)]
            for proc in [collector, *workers]:
                proc.wait(PROCESS_TIMEOUT_S)
            if repo.get_task(f"bench-{i}").phase != "Succeeded":
                raise RuntimeError(f"repository task bench-{i} did not succeed; logs in {tmp}")
            times["repo"].append(time.monotonic() - started)
            in_rounds["repo"].append(rounds_seconds(repo, f"bench-{i}"))
            cpu_report("repo")

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
                    proc.wait(PROCESS_TIMEOUT_S)
            times["bare"].append(time.monotonic() - started)
            cpu_report("bare")
            print(f"federated: repeat {i}: repo {times['repo'][-1]:.1f} s, bare {times['bare'][-1]:.1f} s", flush=True)

            if message:
                paths: list[tuple[str, dict[str, str]]] = [("message", {})]
                if stock_repeats is None or i < stock_repeats:
                    paths.append(("stock", {"FLREPO_FLOWER_STOCK": "1"}))
                for path, extra in paths:
                    task_id = f"bench-{path}-{i}"
                    times[path].append(message_task(repo, url, task_id, rounds, clients, data, {**env, **extra}, tmp))
                    in_rounds[path].append(rounds_seconds(repo, task_id))
                    cpu_report(path)
                    print(
                        f"federated: repeat {i}: {path} {times[path][-1]:.1f} s, load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
            # A repeat's figures as it ends: a long run on a busy machine keeps what it measured.
            print(
                f"federated: repeat {i}: load {loads[-1]:.1f}, "
                + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v),
                flush=True,
            )
        rounds_s = [h.duration_s for h in repo.get_task(f"bench-{repeats - 1}").history if h.duration_s]
        message_rounds = (
            [h.duration_s for h in repo.get_task(f"bench-message-{repeats - 1}").history] if message else []
        )
        checkpoint_ms = checkpoint_cost(repo, f"bench-{repeats - 1}", initial)
        repo.close()
    if sampler is not None:
        sampler.stop()
    median = {path: statistics.median(values) if values else None for path, values in times.items()}
    return {
        "times": times,
        "median": median,
        "in_rounds": {path: statistics.median(v) for path, v in in_rounds.items() if v},
        "message_ratio": median["message"] / median["repo"] if median["message"] else None,
        "stock_ratio": median["message"] / median["stock"] if median["stock"] else None,
        "framework": FRAMEWORK,
        "rounds": rounds,
        "clients": clients,
        "repo_s": median["repo"],
        "bare_s": median["bare"],
        "ratio": median["repo"] / median["bare"],
        "repeats": repeats,
        "loads": loads,
        "round_s": statistics.median(rounds_s) if rounds_s else 0.0,
        "message_round_s": statistics.median([r for r in message_rounds if r]) if message_rounds else None,
        "checkpoint_ms": checkpoint_ms,
    }


class CpuSampler:
    """CPU seconds (user + system) of this process's descendants, read from /proc every
    `interval` s: a process that ends between reads loses at most its last interval. Each is named
    by its role (from its command line); a process forked from another (same command line) is its
    parent's role + " fork". `take` returns the CPU the roles used since the last `take` (seconds,
    processes): long-lived ones (the embedded database, the API server) count only their share."""

    ROLES = (
        ("--app flwr-serverapp", "ServerApp SuperExec"),
        ("flrepo.fl.message.superlink", "SuperLink"),
        ("flrepo.fl.message.executor", "site SuperExec"),
        ("flower_supernode", "SuperNode"),
        ("flower_superexec", "Flower SuperExec"),
        ("flwr_clientapp", "Flower ClientApp"),
        ("flwr_serverapp", "Flower ServerApp"),
        ("local-exec", "local execution"),
        ("collector", "collector"),
        ("flrepo.fl.examples.bare", "bare Flower"),
    )

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        # (pid, start time) -> [role, cpu seconds, cpu seconds at the last take]
        self.seen: dict[tuple[int, str], list[Any]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self.thread.start()

    def _stat(self, pid: str) -> tuple[int, str, float] | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # after the name: state ppid ... utime(14th field) stime(15th) ... starttime(22nd)
        return int(fields[1]), fields[19], (int(fields[11]) + int(fields[12])) / self.tick

    def _cmdline(self, pid: int | str) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""

    def _role(self, pid: int, parents: dict[int, int], cmdlines: dict[int, str]) -> str:
        command = cmdlines.get(pid, "")
        parent = parents.get(pid)
        if parent is not None and parent in cmdlines and cmdlines[parent] == command:
            return self._role(parent, parents, cmdlines) + " fork"
        return next((role for key, role in self.ROLES if key in command), command[:60] or "?")

    def _run(self) -> None:
        me = os.getpid()
        while not self.stopping.wait(self.interval):
            stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := self._stat(p)) is not None}
            parents = {pid: s[0] for pid, s in stats.items()}
            mine: set[int] = set()
            for pid in stats:
                chain, current = [], pid
                while current in parents and current not in mine and current != me:
                    chain.append(current)
                    current = parents[current]
                if current == me or current in mine:
                    mine.update(chain)
            cmdlines = {pid: self._cmdline(pid) for pid in mine}
            with self.lock:
                for pid in mine:
                    key = (pid, stats[pid][1])
                    if key not in self.seen:
                        self.seen[key] = [self._role(pid, parents, cmdlines), 0.0, 0.0]
                    elif cmdlines[pid]:  # named again: one first seen between its fork and exec has a new name now
                        self.seen[key][0] = self._role(pid, parents, cmdlines)
                    self.seen[key][1] = max(self.seen[key][1], stats[pid][2])

    def take(self) -> dict[str, tuple[float, int]]:
        time.sleep(self.interval * 2)
        totals: dict[str, tuple[float, int]] = {}
        with self.lock:
            for entry in self.seen.values():
                role, cpu, before = entry
                entry[2] = cpu
                if cpu > before:
                    total, count = totals.get(role, (0.0, 0))
                    totals[role] = (total + cpu - before, count + 1)
        return totals

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


def cpu_line(path: str, totals: dict[str, tuple[float, int]]) -> str:
    parts = [f"{role} {cpu:.1f} ({n})" for role, (cpu, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])]
    return f"federated: CPU s {path}: total {sum(c for c, _ in totals.values()):.1f}: " + ", ".join(parts)


def rounds_seconds(repo: Any, task_id: str) -> float:
    """The time the task spent in its rounds (the rest is starting and stopping)."""
    return sum(h.duration_s or 0.0 for h in repo.get_task(task_id).history)


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
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while not repo.get_task(task_id).server_address:
        if time.monotonic() > deadline or collector.poll() is not None:
            raise RuntimeError(f"Message-API task {task_id}: no server address; logs in {tmp}")
        time.sleep(0.05)
    workers = [
        local_exec(url, task_id, None, spec, k, env, tmp, ["--participant-key", str(keys[k - 1])])
        for k, spec in enumerate(data, 1)
    ]
    for proc in [collector, *workers]:
        proc.wait(PROCESS_TIMEOUT_S)
    if repo.get_task(task_id).phase != "Succeeded":
        raise RuntimeError(f"Message-API task {task_id} did not succeed; logs in {tmp}")
    return time.monotonic() - started


def wait_listening(address: str, timeout: float = 600) -> None:
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
    nice: int = 0,
) -> Any:
    """A local execution; without `address`, it finds the collector through the task. `nice`: its
    scheduling priority (inherited by its SuperNode, SuperExec and ClientApps), for sites that stand
    for other machines."""
    command = [sys.executable, "-m", "flrepo.cli", "local-exec", "--task", task_id, "--repo", url]
    command += [*(["--server", address] if address else []), "--data", spec, "--seed", str(k), *(options or [])]
    with open(logs / f"local-exec-{k}.log", "ab") as log:
        lower = (lambda: os.nice(nice)) if nice else None
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lower)


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

    from bench.report import machine, publish

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument(
        "--stock-repeats", type=int, help="run Flower's stock runtime in this many repeats only (default: all)"
    )
    parser.add_argument("--out", type=Path, help="prepend the section to this Markdown file")
    parser.add_argument("--cpu", action="store_true", help="print each path's CPU seconds per process role")
    args = parser.parse_args()
    from flrepo.server.embedded import EmbeddedMongo

    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedMongo(Path(tmp_name) / "db") as mongo:
        fed = federated(
            mongo.url, Path(tmp_name), args.rounds, args.clients, args.repeats, True, args.stock_repeats, args.cpu
        )
    share = 100 * fed["checkpoint_ms"] / 1000 / max(fed["round_s"], 1e-9)
    med, spent = fed["median"], fed["in_rounds"]

    def row(label: str, path: str) -> str:
        if med[path] is None:  # --stock-repeats 0
            return f"| {label} | not run | - | - | - |"
        runs = ", ".join(f"{t:.1f}" for t in fed["times"][path])
        rounds = f"{spent[path]:.1f} s" if path in spent else "-"
        outside = f"{med[path] - spent[path]:.1f} s" if path in spent else "-"
        return f"| {label} | **{med[path]:.2f} s** | {runs} | {rounds} | {outside} |"

    text = "\n".join(
        [
            f"## Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — federated round overhead "
            f"(`python bench/federated.py --repeats {args.repeats}"
            + (f" --stock-repeats {args.stock_repeats}" if args.stock_repeats is not None else "")
            + "`)",
            "",
            f"Machine: {machine()}; load average (1 min) at each repeat's start: "
            + ", ".join(f"{load:.1f}" for load in fed["loads"])
            + ".",
            "",
            f"A {fed['framework']} MLP (64-32-10) on the digits, FedAvg, {fed['clients']} local executions, "
            f"{fed['rounds']} rounds, 2 local epochs per round, each process started cold (imports torch), one "
            "OpenMP / OpenBLAS thread per process (3 sites share the cores: `ONE_THREAD`). "
            "The four paths alternate within each repeat.",
            "",
            f"| path | median of {fed['repeats']} | runs (s) | in rounds | starting + stopping |",
            "|---|---:|---|---:|---:|",
            row("through the repository, legacy runtime (as aerOS: gRPC, plaintext)", "repo"),
            row("bare Flower, legacy API", "bare"),
            row("through the repository, Message-API runtime (flrepo's: TLS, SuperNode auth)", "message"),
            row("same ServerApp/ClientApp on Flower's stock SuperLink/SuperNode (TLS, SuperNode auth)", "stock"),
            "",
            f"- ratio repository (legacy) / bare Flower: **{fed['ratio']:.2f}** (goal ≤ 1.15)",
            f"- ratio Message API / legacy: **{fed['message_ratio']:.2f}** (goal ≤ 1.2)",
            "- ratio Message API / stock Flower SuperLink/SuperNode: "
            + (f"**{fed['stock_ratio']:.2f}** (goal ≤ 1.0)" if fed["stock_ratio"] is not None else "not run"),
            "",
            f"One checkpoint (register + upload the round's .npz): median **{fed['checkpoint_ms']:.1f} ms**; "
            f"a legacy round's median is {fed['round_s']:.2f} s, so checkpoints cost {share:.1f} % of a round "
            f"(a Message-API round's median: {fed['message_round_s']:.2f} s).",
            "",
        ]
    )
    return publish(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
