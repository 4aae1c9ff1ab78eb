"""5. Federated training at scale on one machine: 3, 10 and 30 sites on the Message-API runtime
(flrepo's SuperLink/SuperNode runtime, TLS and SuperNode authentication) and on the legacy gRPC
runtime, with the NumPy softmax model (30 sites fit in 2 cores) and the PyTorch MLP (3 and 10).

Per run: wall time per round (median), the repository's share of a round (requests and server
milliseconds per round, from the service's own /metrics: every request the collector and the sites
made while the task ran, divided by the rounds; their server time against the round's wall time),
resident memory per site (the peak RSS and PSS of a site's processes: the local execution and,
on the Message API, its SuperNode, SuperExec and the ClientApp processes), participants lost (sites
missing from a round or failing in it), and the service's 5xx answers.

    python bench/fl_scale.py [--sites 3,10,30] [--rounds 3] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import math
import os
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import cpu_seconds
from bench.federated import ONE_THREAD, local_exec, wait_listening
from flrepo.server.embedded import api_server, free_port

RUN_TIMEOUT_S = 3600.0
# The sites stand for other machines: at a lower priority they leave the repository and the collector
# the CPU those would have on hosts of their own, and a request's server time (a wall time) is then the
# repository's work rather than the wait for a core behind 30 sites' processes (--sites-nice 0 shows that).
SITES_NICE = 10
METRIC = re.compile(r"^(flrepo_http_[a-z_]+)\{(.*)\} ([0-9.e+-]+)$")  # routes hold braces too


@dataclass
class Plan:
    runtime: str  # "message" or "legacy"
    framework: str  # "numpy" or "pytorch"
    sites: int

    @property
    def task_id(self) -> str:
        return f"scale-{self.runtime}-{self.framework}-{self.sites}"


@dataclass
class Memory:
    """Peak RSS/PSS (MiB) of each site's process tree, sampled every `every` seconds."""

    roots: list[int]
    every: float = 1.0
    rss: dict[int, float] = field(default_factory=dict)
    pss: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Memory:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            children = _children()
            for root in self.roots:
                rss = pss = 0.0
                for pid in _tree(root, children):
                    rss += _kib(f"/proc/{pid}/status", "VmRSS:") / 1024
                    pss += _kib(f"/proc/{pid}/smaps_rollup", "Pss:") / 1024
                self.rss[root] = max(self.rss.get(root, 0.0), rss)
                self.pss[root] = max(self.pss.get(root, 0.0), pss)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry))
    return tree


def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kib(path: str, key: str) -> float:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


# The embedded store's process, whose CPU counts with the API server's as the repository's (main sets it).
STORE_PID: int | None = None
CPU_KEY = ("repository_cpu_seconds", "")


def store_cpu_seconds() -> float:
    """User + system CPU seconds of the embedded store's process so far (0 when unknown)."""
    return cpu_seconds(STORE_PID)


def metrics(url: str) -> dict[tuple[str, str], float]:
    """(metric name, labels) -> value, of the service's request counters and latency sums; and under
    CPU_KEY the CPU seconds of the API server (its /metrics) and the embedded store together."""
    found = {CPU_KEY: store_cpu_seconds()}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        match = METRIC.match(line)
        if match and match.group(1) in ("flrepo_http_requests_total", "flrepo_http_request_duration_seconds_sum"):
            found[(match.group(1), match.group(2))] = float(match.group(3))
        elif line.startswith("process_cpu_seconds_total "):
            found[CPU_KEY] += float(line.split()[1])
    return found


# The collector's round work: status reports (PUT .../status, heartbeats included) and checkpoints
# (register, upload).
ROUND_WORK = re.compile(r'method="(PUT|POST)",route="/tasks/\{task_id\}/(status|checkpoints[^"]*)"')
# Reads of one task: mostly the sites' reads held until the task ends (GET /tasks/{id}?wait_end=),
# whose server time is waiting, not work: counted apart.
TASK_READ = re.compile(r'method="GET",route="/tasks/\{task_id\}"')


ROUTE = re.compile(r'method="([A-Z]+)",route="([^"]*)"')


def delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> dict[str, Any]:
    """Requests and server seconds since `before`: the round work's, the task reads' and the rest's;
    and under "routes", each route's but the task reads' (requests, server seconds)."""
    kinds = ("round", "reads", "other")
    found: dict[str, Any] = {f"{k}_{m}": 0.0 for k in kinds for m in ("requests", "server_s")} | {"5xx": 0.0}
    routes: dict[str, list[float]] = {}
    found["cpu_s"] = after.get(CPU_KEY, 0.0) - before.get(CPU_KEY, 0.0)
    for key, value in after.items():
        if key == CPU_KEY:
            continue
        change = value - before.get(key, 0.0)
        counter = key[0] == "flrepo_http_requests_total"
        kind = "round" if ROUND_WORK.search(key[1]) else "reads" if TASK_READ.search(key[1]) else "other"
        found[f"{kind}_{'requests' if counter else 'server_s'}"] += change
        if counter and 'status="5' in key[1]:
            found["5xx"] += change
        route = ROUTE.search(key[1])
        if kind != "reads" and route and change:
            routes.setdefault(" ".join(route.groups()), [0.0, 0.0])[0 if counter else 1] += change
    found["routes"] = {name: (int(n), round(s, 2)) for name, (n, s) in routes.items()}
    return found


class AfterFirstRound(threading.Thread):
    """Takes a /metrics snapshot once the task shows its first round: what the repository did in the
    steady rounds after it, apart from round 1, which also holds every site's start (30 sites' downloads
    at once make every request of that minute slow, the collector's reports included). With the
    collector's writes paced (flrepo.fl.core.round_writes) the first round the task shows can be a later
    one, or the last: `round` says which."""

    def __init__(self, url: str, task_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.task_id = url, task_id
        self.snapshot: dict[tuple[str, str], float] | None = None
        self.round = 0  # the round the task showed when the snapshot was taken
        self.reads = 0  # its own reads of the task, taken off the sites' figure
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.reads += 1
            task = httpx.get(f"{self.url}/tasks/{self.task_id}", params={"history": 0}, timeout=30).json()
            if (task.get("current_round") or 0) >= 1:
                self.snapshot = metrics(self.url)
                self.round = int(task["current_round"])
                return
            self.done.wait(0.25)


def partitions(work: Path, sites: int) -> list[str]:
    """Each site's data: digits:K/N up to 10 sites; beyond, that split leaves sites without samples
    (it prefers one label per site), so an even round-robin share of the digits' training split."""
    if sites <= 10:
        return [f"digits:{k}/{sites}" for k in range(1, sites + 1)]
    import numpy as np

    from flrepo.fl.examples.data import held_out

    x, y, _, _ = held_out()
    files = []
    for k in range(sites):
        path = work / f"site-{k + 1}.npz"
        np.savez(path, x=x[k::sites], y=y[k::sites])
        files.append(str(path))
    return files


def run(
    repo: Any, url: str, plan: Plan, rounds: int, env: dict[str, str], tmp: Path, sites_nice: int = 0
) -> dict[str, Any]:
    """One training of `plan`, its sites at scheduling priority `sites_nice`; its figures."""
    from flrepo.fl.demo import digits_task, start_collector

    work = tmp / plan.task_id
    work.mkdir()
    data = partitions(work, plan.sites)
    task = digits_task(plan.task_id, "fedavg", rounds, plan.sites, plan.framework)
    task |= {"model": {"model_name": f"digits-{plan.framework}", "model_version": "v1"}}
    task |= {"round_timeout": 900, "participants_timeout": 1800, "heartbeat_timeout": 600}
    options: list[list[str]] = [[] for _ in data]
    collector_options: list[str] = []
    if plan.runtime == "message":
        from tests.helpers import make_participant_key, make_tls

        keys = [work / f"site-{k}" for k in range(1, plan.sites + 1)]
        task = {**task, "strategy": {"strategy_name": "message-fedavg"}}
        task["participant_keys"] = [make_participant_key(path) for path in keys]
        collector_options = ["--tls-dir", str(make_tls(work / "tls"))]
        options = [["--participant-key", str(key)] for key in keys]
    before = metrics(url)
    started = time.monotonic()
    repo.create_task(task)
    first_round = AfterFirstRound(url, plan.task_id)
    first_round.start()
    address = f"127.0.0.1:{free_port()}"
    collector = start_collector(url, plan.task_id, env, work, address, collector_options)
    own_reads = 0  # this harness's reads of the task, taken off the sites' figure
    if plan.runtime == "message":  # the sites find the SuperLink through the task
        while not repo.get_task(plan.task_id, history=0).server_address:
            own_reads += 1
            if collector.poll() is not None or time.monotonic() - started > 300:
                raise RuntimeError(f"{plan.task_id}: the collector published no address; logs in {work}")
            time.sleep(0.5)
        own_reads += 1
    else:
        wait_listening(address, timeout=300)
    server = address if plan.runtime == "legacy" else None
    sites = [
        local_exec(url, plan.task_id, server, spec, k, env, work, options[k - 1], nice=sites_nice)
        for k, spec in enumerate(data, 1)
    ]
    memory = Memory([site.pid for site in sites]).start()
    for proc in [collector, *sites]:
        proc.wait(RUN_TIMEOUT_S)
    wall = time.monotonic() - started
    memory.stop()
    first_round.done.set()
    first_round.join(60)
    own_reads += first_round.reads
    after = metrics(url)
    done = repo.get_task(plan.task_id, history=0)
    history = list(repo.iter_task_history(plan.task_id))  # every round (GET /tasks/{id} shows the last 100)
    lost = max([plan.sites - h.participants + h.failures for h in history] + [plan.sites if not history else 0, 0])
    used = delta(before, after)
    # A round's duration_s runs from the previous round's end (its reports and checkpoint handed to
    # the collector's sender, or made, included) to its aggregation: the rounds' durations add up to
    # the training (flrepo.fl.core.reporting.RoundReporter). The median leaves out round 1's wait
    # for the sites to join.
    durations = [h.duration_s or 0.0 for h in history]
    # What the collector's rounds waited for the repository (its writes' backlog full), as it
    # recorded in the training result: the repository's part of the rounds' critical path.
    figures = repo.get_training_result(f"digits-{plan.framework}", "v1", plan.task_id).results or {}
    waited = float(figures.get("repository_wait_s", "nan"))
    rounds_total = float(figures.get("rounds_s") or sum(durations) or "nan")
    round_s = statistics.median(durations) if history else 0.0
    per_round = max(len(history), 1)
    # Rounds k+1..N (and the task's end), k the first round the task showed: their round work against
    # their median round; none when the task showed no round before its last.
    steady_share = float("nan")
    steady_cpu = float("nan")  # the repository's CPU seconds (API server + store) per second of those rounds
    shown = first_round.round
    if first_round.snapshot is not None and 1 <= shown < len(durations):
        steady = delta(first_round.snapshot, after)
        steady_share = steady["round_server_s"] / (len(durations) - shown) / statistics.median(durations[shown:])
        steady_cpu = steady["cpu_s"] / sum(durations[shown:])
    return {
        "plan": plan,
        "phase": done.phase,
        "wall_s": wall,
        "round_s": round_s,
        "rounds_s": durations,
        "rounds": len(history),
        "reads_per_round": (used["reads_requests"] - own_reads) / per_round,
        "other_per_round": used["other_requests"] / per_round,
        "other_ms_per_round": 1000 * used["other_server_s"] / per_round,
        "round_requests_per_round": used["round_requests"] / per_round,
        "round_ms_per_round": 1000 * used["round_server_s"] / per_round,
        # Every status report, heartbeat and checkpoint of the task's run, in server time, against
        # one round: off the critical path or not, the time the repository spent on the round.
        "share": used["round_server_s"] / per_round / round_s if round_s else float("nan"),
        "steady_share": steady_share,
        # The same work against the rounds' whole time (their durations add up to the training): round
        # 1 holds every site's start, when each request is slowest, and is counted at its own length.
        "training_share": used["round_server_s"] / sum(durations) if sum(durations) else float("nan"),
        # All the repository's CPU (API server and store: every request, the sites' downloads too) per
        # second of the rounds: its load on the machine, which a request's server time (a wall time)
        # overstates when 30 sites' processes share 2 cores with it.
        "cpu_share": used["cpu_s"] / sum(durations) if sum(durations) else float("nan"),
        "steady_cpu_share": steady_cpu,
        "critical_share": waited / rounds_total,
        # The collector's round writes (reports + checkpoints, the task's start and end reports left
        # out) in their own time as it measured them, against the rounds' time.
        "writes": float(figures.get("round_writes", "nan")),
        "writes_s": float(figures.get("round_writes_s", "nan")),
        "writes_share": float(figures.get("round_writes_s", "nan")) / rounds_total,
        "waited_s": waited,
        "5xx": used["5xx"],
        "routes": used["routes"],  # requests and server seconds over the run, by route (task reads left out)
        "lost": lost,
        "rss_mib": statistics.median(memory.rss.values()) if memory.rss else 0.0,
        "pss_mib": statistics.median(memory.pss.values()) if memory.pss else 0.0,
        "exit_codes": [collector.returncode, *[s.returncode for s in sites]],
    }


def plans(sites: list[int], torch_sites: list[int]) -> list[Plan]:
    found = []
    for n in sites:
        for framework in ("numpy", "pytorch"):
            if framework == "pytorch" and n not in torch_sites:
                continue
            found += [Plan("message", framework, n), Plan("legacy", framework, n)]
    return found


def percent(share: float) -> str:
    return "-" if math.isnan(share) else f"{100 * share:.1f} %"


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| runtime | model | sites | wall time | per round (median) | status + checkpoint requests / round "
        "| their server ms / round | their server time / round | same, after the first round shown "
        "| same, all rounds' time "
        "| repository CPU / round time (after the first round shown) "
        "| round writes (collector's clock) / rounds' time "
        "| **rounds' wait for the repository** "
        "| sites' task reads / round | other requests / round (ms) | RSS / site (PSS) | lost | 5xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        plan = r["plan"]
        lines.append(
            f"| {plan.runtime} | {plan.framework} | {plan.sites} | {r['wall_s']:.1f} s | {r['round_s']:.2f} s "
            f"| {r['round_requests_per_round']:.1f} | {r['round_ms_per_round']:.0f} | {100 * r['share']:.1f} % "
            f"| {percent(r['steady_share'])} | {100 * r['training_share']:.1f} % "
            f"| {100 * r['cpu_share']:.1f} % ({percent(r['steady_cpu_share'])}) "
            f"| {100 * r['writes_share']:.1f} % ({r['writes']:.0f} in {r['writes_s']:.2f} s) "
            f"| **{100 * r['critical_share']:.1f} %** ({r['waited_s']:.2f} s) "
            f"| {r['reads_per_round']:.1f} | {r['other_per_round']:.1f} ({r['other_ms_per_round']:.0f}) "
            f"| {r['rss_mib']:.0f} MiB ({r['pss_mib']:.0f}) | {r['lost']} | {r['5xx']:.0f} |"
        )
    return lines


def main() -> int:
    import argparse
    import tempfile

    from bench.report import machine, publish
    from flrepo.client import RepositoryClient
    from flrepo.fl.catalogue import seed
    from flrepo.fl.demo import fl_env, publisher, register_model
    from flrepo.server.embedded import EmbeddedMongo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", default="3,10,30", help="site counts (NumPy model)")
    parser.add_argument("--torch-sites", default="3,10", help="site counts for the PyTorch model too")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["message", "legacy"], help="one runtime only")
    parser.add_argument(
        "--sites-nice",
        type=int,
        default=SITES_NICE,
        help="the sites' scheduling priority (nice; 0: the same as the repository's and the collector's)",
    )
    parser.add_argument("--out", type=Path, help="prepend the section to this Markdown file")
    parser.add_argument("--workdir", type=Path, help="keep the logs here (default: a temporary directory)")
    args = parser.parse_args()
    chosen = plans([int(n) for n in args.sites.split(",")], [int(n) for n in args.torch_sites.split(",")])
    chosen = [p for p in chosen if args.only in (None, p.runtime)]
    results = []
    env_db = {"FLREPO_DB_NAME": "fl", "FLREPO_GRIDFS_DB_NAME": "fl_grid", "FLREPO_LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedMongo(Path(args.workdir or tmp_name) / "db") as mongo:
        tmp = Path(args.workdir or tmp_name)
        global STORE_PID
        STORE_PID = mongo.process.pid if mongo.process is not None else None
        with api_server(tmp, mongo.url, FLREPO_METRICS_PUBLIC="1", **env_db) as (url, _):
            keyring, trusted = publisher("bench")
            repo = RepositoryClient(url, keyring=keyring)
            seed(repo)
            for framework in ("numpy", "pytorch"):
                register_model(repo, f"digits-{framework}", "v1", framework, tmp)
            env = {**fl_env(url, trusted), "FLREPO_LOG_LEVEL": "WARNING", **ONE_THREAD}
            for plan in chosen:
                load = os.getloadavg()[0]
                result = run(repo, url, plan, args.rounds, env, tmp, args.sites_nice) | {"load": load}
                print(f"fl_scale: {plan.task_id}: {result}", flush=True)
                if result["phase"] != "Succeeded":
                    raise RuntimeError(f"{plan.task_id} ended {result['phase']}; logs in {tmp / plan.task_id}")
                results.append(result)
            repo.close()
    text = "\n".join(
        [
            f"## Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — federated training at scale "
            f"(`python bench/fl_scale.py --sites {args.sites} --torch-sites {args.torch_sites} "
            f"--rounds {args.rounds} --sites-nice {args.sites_nice}`)",
            "",
            f"Machine: {machine()}; load average (1 min) before each run: "
            + ", ".join(f"{r['load']:.1f}" for r in results)
            + ".",
            "",
            f"FedAvg, {args.rounds} rounds, each site a `flrepo local-exec` on its share of the digits"
            + (
                f", at nice {args.sites_nice} (its SuperNode, SuperExec and ClientApps too: the sites stand for "
                "other machines, and leave the repository and the collector the CPU they would have on their own "
                "hosts); "
                if args.sites_nice
                else ", at the repository's and the collector's priority; "
            )
            + "one OpenMP / OpenBLAS thread per process (bench.federated.ONE_THREAD); the "
            "Message API with TLS and SuperNode authentication, the legacy runtime in plaintext (as aerOS). "
            "Repository figures come from the service's /metrics: the round work is every status report "
            "(heartbeats included) and checkpoint (register + upload) of the run, its server time per round "
            "against the round's median duration (which runs from the previous round's end to this one's "
            "aggregation, so the rounds add up to the training); *after the first round shown* is the same for "
            "the round work after the task first showed a round k (taken from /metrics at that moment), against "
            "the median of rounds k+1 and on: round 1 also holds every site's start (with paced writes k can be "
            "later; '-' when the task showed no round before its last); *all rounds' time* is the run's round work "
            "against the sum of the rounds' durations (round 1 at its own length); *repository CPU* is the API "
            "server's and the embedded store's CPU seconds over the run (every request, the sites' downloads "
            "too) per second of the rounds, in brackets from round k+1 on (a share of one core). *Round writes* are "
            "the collector's own count and time (its clock, loopback) of the writes its rounds made in the "
            "background, reports and checkpoints, against the rounds' time (`round_writes`, `round_writes_s` "
            "in the training result): the task's start and end reports and its heartbeats are not in it. "
            "The rounds' wait for the repository is the time the collector's rounds were blocked on those "
            "writes (a full backlog of its "
            "background sender), against the rounds' total time, as the collector records it in the training result "
            "(`repository_wait_s`, `rounds_s`); the sites' task reads are held by the "
            "service until the task ends (their server time is waiting, left out); *other requests* are "
            "downloads, site reports, claims.",
            "",
            *table(results),
            "",
        ]
    )
    return publish(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
