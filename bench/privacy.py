"""6. What a task's privacy costs: each mechanism against none on the Message-API runtime, with the
PyTorch MLP on the digits, 3 and 10 sites: wall time per round (median) and its ratio to the same
task without privacy; the held-out accuracy of the published model, and the ε it reports, for DP at
two noise levels.

Mechanisms: none; DP with server-side and client-side fixed clipping (Flower's wrappers and
fixedclipping_mod), server-side and client-side adaptive clipping; SecAgg+ (Flower's workflow and
secaggplus_mod); client-side fixed clipping DP with SecAgg+ (`dp-secagg`: each site clips, then
masks). The sites find the collector through the task; plaintext on loopback.

    python bench/privacy.py [--sites 3,10] [--rounds 3] [--noise 0.1,1.0] [--mechanisms ...] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.federated import local_exec
from bench.fl_scale import partitions
from flrepo.server.embedded import api_server, free_port

RUN_TIMEOUT_S = 3600.0
CLIPPING_NORM = 1.0
MECHANISMS = ["none", "server-fixed", "client-fixed", "server-adaptive", "client-adaptive", "secagg", "dp-secagg"]


def privacy_of(mechanism: str, noise: float, sites: int) -> dict[str, Any] | None:
    if mechanism == "none":
        return None
    shares = sites if sites % 2 else sites - 1  # odd, as SecAgg+ prefers
    secure = {"num_shares": shares, "reconstruction_threshold": max(2, shares // 2 + 1)}
    if mechanism == "secagg":
        return {"secure_aggregation": secure}
    mode = "client-fixed" if mechanism == "dp-secagg" else mechanism
    dp: dict[str, Any] = {"mode": mode, "noise_multiplier": noise, "clipping_norm": CLIPPING_NORM}
    if mode.endswith("adaptive"):
        dp["clipped_count_stddev"] = max(sites / 20, noise)  # Flower needs it above noise_multiplier / 2
    return {"dp": dp, "secure_aggregation": secure} if mechanism == "dp-secagg" else {"dp": dp}


def run(
    repo: Any, url: str, mechanism: str, noise: float, sites: int, rounds: int, env: dict[str, str], tmp: Path
) -> dict[str, Any]:
    from flrepo.fl.demo import digits_task, held_out_accuracy, start_collector

    task_id = f"privacy-{mechanism}-{sites}-{str(noise).replace('.', '_')}"
    work = tmp / task_id
    work.mkdir()
    task = digits_task(task_id, "message-fedavg", rounds, sites, "pytorch")
    task |= {"model": {"model_name": "digits-pytorch", "model_version": "v1"}}
    task |= {"round_timeout": 900, "participants_timeout": 1800, "heartbeat_timeout": 600}
    privacy = privacy_of(mechanism, noise, sites)
    if privacy is not None:
        task["privacy"] = privacy
    started = time.monotonic()
    repo.create_task(task)
    collector = start_collector(url, task_id, env, work, f"127.0.0.1:{free_port()}", ["--insecure"])
    processes = [collector, *(local_exec(url, task_id, None, spec, k, env, work) for k, spec in
                              enumerate(partitions(work, sites), 1))]  # fmt: skip
    for process in processes:
        process.wait(RUN_TIMEOUT_S)
    done = repo.get_task(task_id)
    if done.phase != "Succeeded":  # recorded as such: one run lost to a loaded machine must not lose the rest
        failed = f"{done.phase}: {done.conditions[-1].message}"
        print(f"privacy: {task_id} {failed}; logs in {work}", flush=True)
        return {"mechanism": mechanism, "noise": noise, "sites": sites, "failed": failed}
    trained = work / "trained.pt2"
    repo.download_model("digits-pytorch", f"v1-{task_id}", trained)
    history = done.history
    return {
        "mechanism": mechanism,
        "noise": noise if privacy and "dp" in privacy else None,
        "sites": sites,
        "wall_s": time.monotonic() - started,
        "round_s": statistics.median([h.duration_s or 0.0 for h in history]),
        "epsilon": history[-1].epsilon,
        "accuracy": held_out_accuracy("pytorch", trained),
    }


def runs(mechanisms: list[str], sites: list[int], noises: list[float]) -> list[tuple[str, float, int]]:
    """Each mechanism at the first noise level for every site count; DP's accuracy at the others
    at the smallest site count only."""
    chosen = [(m, noises[0], n) for n in sites for m in mechanisms]
    chosen += [(m, noise, sites[0]) for m in mechanisms if m not in ("none", "secagg") for noise in noises[1:]]
    return chosen


def table(results: list[dict[str, Any]]) -> list[str]:
    base = {r["sites"]: r["round_s"] for r in results if r["mechanism"] == "none" and "failed" not in r}
    lines = [
        "| mechanism | sites | noise multiplier | per round (median) | **vs none** | ε (δ = 1e-5) "
        "| held-out accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "failed" in r:
            lines.append(f"| {r['mechanism']} | {r['sites']} | {r['noise']:g} | {r['failed'][:80]} | | | |")
            continue
        ratio = r["round_s"] / base[r["sites"]] if base.get(r["sites"]) else float("nan")
        noise = "" if r["noise"] is None else f"{r['noise']:g}"
        epsilon = "" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        lines.append(
            f"| {r['mechanism']} | {r['sites']} | {noise} | {r['round_s']:.2f} s | **{ratio:.2f} x** "
            f"| {epsilon} | {r['accuracy']:.3f} |"
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
    parser.add_argument("--sites", default="3,10")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noise", default="0.1,1.0", help="DP noise multipliers (the first for the timings)")
    parser.add_argument("--mechanisms", default=",".join(MECHANISMS))
    parser.add_argument("--out", type=Path, help="prepend the section to this Markdown file")
    parser.add_argument("--workdir", type=Path, help="keep the logs here (default: a temporary directory)")
    args = parser.parse_args()
    sites = [int(n) for n in args.sites.split(",")]
    noises = [float(x) for x in args.noise.split(",")]
    chosen = runs(args.mechanisms.split(","), sites, noises)
    results, loads = [], []
    env_db = {"FLREPO_DB_NAME": "fl", "FLREPO_GRIDFS_DB_NAME": "fl_grid", "FLREPO_LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedMongo(Path(args.workdir or tmp_name) / "db") as mongo:
        tmp = Path(args.workdir or tmp_name)
        with api_server(tmp, mongo.url, **env_db) as (url, _):
            keyring, trusted = publisher("bench")
            repo = RepositoryClient(url, keyring=keyring)
            seed(repo)
            register_model(repo, "digits-pytorch", "v1", "pytorch", tmp)
            env = {**fl_env(url, trusted), "FLREPO_LOG_LEVEL": "WARNING"}
            try:
                for mechanism, noise, n in chosen:
                    loads.append(os.getloadavg()[0])
                    result = run(repo, url, mechanism, noise, n, args.rounds, env, tmp)
                    print(f"privacy: {result}", flush=True)
                    results.append(result)
            except KeyboardInterrupt:  # what was measured is still worth recording, marked as such
                print(f"privacy: interrupted after {len(results)} of {len(chosen)} runs", flush=True)
            repo.close()
    text = "\n".join(
        [
            f"## Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — privacy mechanisms "
            f"(`python bench/privacy.py --sites {args.sites} --rounds {args.rounds} --noise {args.noise} "
            f"--mechanisms {args.mechanisms}`)"
            + ("" if len(results) == len(chosen) else f" — interrupted: {len(results)} of {len(chosen)} runs"),
            "",
            f"Machine: {machine()}; load average (1 min) before each run: "
            + ", ".join(f"{x:.1f}" for x in loads)
            + ".",
            "",
            f"Message-API runtime (plaintext on loopback), PyTorch MLP, FedAvg, {args.rounds} rounds, each site a "
            f"`flrepo local-exec` on its share of the digits. DP: clipping norm {CLIPPING_NORM:g} (adaptive: the "
            "initial norm), noise on the aggregate by Flower's wrappers, ε from Flower's RDP accountant after the "
            "last round; SecAgg+: num_shares = the sites (odd), threshold a majority of them; dp-secagg: "
            "client-fixed DP with that SecAgg+. *vs none*: the median round against the same task without privacy "
            "at the same site count.",
            "",
            *table(results),
            "",
        ]
    )
    return publish(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
