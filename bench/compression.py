"""Compression of the update path (issue #24): each codec as a real task through the repository, on
the legacy and the Message-API runtime, with the digits MLP of each framework (FedAvg, 3 sites, 40
rounds by default; each site a `flrepo local-exec` on its share of the digits).

Every config trains the same task: the same data, sites, seeds, rounds and local training (the
framework's digits settings, flrepo.fl.examples.digits_models.TRAINING, with the learning rate
`--learning-rate` for all of them). Why 40 rounds and a learning rate of 0.003 rather than 10 and
0.01: top-k at 3 % moves at most 3 % of each tensor per site and round, so after 10 rounds most of
the model has not moved at all and top-k is 7.5 points behind; it catches up as the rounds go on
(`--runtimes in-process --rounds 10,20,40,60` shows the curve in a minute or two). At 0.01 the
uncompressed run itself wanders by 0.8 point from one round count to the next (20 to 80), as much as
the 1-point bound; at 0.003 every config's accuracy rises smoothly, so a difference of a point means
something.

Per run, from the task's round history (bytes as they went on the wire, all sites together, and
the codec milliseconds of the collector and the sites) and the published model (held-out accuracy,
loaded from its native file): uplink and downlink bytes per round, their ratio to the same
framework's and runtime's `none` run, final held-out accuracy and its difference to `none`, encode
and decode ms per round.

    python bench/compression.py [--frameworks pytorch,keras] [--runtimes legacy,message]
        [--rounds 40] [--learning-rate 0.003] [--sites 3] [--configs none,fp16,...] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.federated import local_exec, wait_listening
from flrepo.server.embedded import api_server, free_port

RUN_TIMEOUT_S = 3600.0
# name -> the task's `compression` (None: the task sets none); `fp16` is fp16 both ways.
CONFIGS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "fp16": {"uplink": "fp16", "error_feedback": False, "downlink": "fp16"},
    "int8": {"uplink": "int8", "error_feedback": False},
    "topk1%": {"uplink": "topk", "ratio": 0.01, "error_feedback": False},
    "topk1%+EF": {"uplink": "topk", "ratio": 0.01, "error_feedback": True},
    "topk3%+EF": {"uplink": "topk", "ratio": 0.03, "error_feedback": True},
    "stc3%+EF": {"uplink": "stc", "ratio": 0.03, "error_feedback": True},
}
LIBRARY = {"pytorch": "pytorch", "keras": "keras", "numpy": "numpy"}
LEARNING_RATE = 0.003  # for every config and framework (see the module's docstring)


def training(framework: str, learning_rate: float | None) -> dict[str, Any]:
    """The local training of every config's task: the framework's digits settings, at `learning_rate`."""
    from flrepo.fl.examples.digits_models import TRAINING

    settings = dict(TRAINING[framework])
    return settings if learning_rate is None else settings | {"learning_rate": learning_rate}


def run(
    repo: Any,
    url: str,
    runtime: str,
    framework: str,
    config: str,
    rounds: int,
    sites: int,
    env: dict[str, str],
    tmp: Path,
    learning_rate: float | None = LEARNING_RATE,
) -> dict[str, Any]:
    """One task; its figures."""
    from flrepo.fl.demo import digits_task, held_out_accuracy, start_collector

    task_id = f"c-{runtime}-{framework}-{config}-{rounds}".replace("%", "pc").replace("+", "-")
    work = tmp / task_id
    work.mkdir()
    strategy = "message-fedavg" if runtime == "message" else "fedavg"
    task = digits_task(task_id, strategy, rounds, sites, framework)
    task |= {"model": {"model_name": f"digits-{framework}", "model_version": "v1"}}
    task |= {"round_timeout": 900, "participants_timeout": 1800, "heartbeat_timeout": 600}
    task["training"] = training(framework, learning_rate)
    if CONFIGS[config] is not None:
        task["compression"] = CONFIGS[config]
    load = os.getloadavg()[0]
    started = time.monotonic()
    repo.create_task(task)
    address = f"127.0.0.1:{free_port()}"
    site_env = {**env, "FLREPO_STATE_DIR": str(work / "state")}
    collector = start_collector(url, task_id, env, work, address, ["--insecure"] if runtime == "message" else [])
    if runtime == "message":  # the sites find the SuperLink through the task
        while not repo.get_task(task_id).server_address:
            if collector.poll() is not None or time.monotonic() - started > 300:
                raise RuntimeError(f"{task_id}: the collector published no address; logs in {work}")
            time.sleep(0.1)
    else:
        wait_listening(address, timeout=300)
    server = address if runtime == "legacy" else None
    data = [f"digits:{k}/{sites}" for k in range(1, sites + 1)]
    procs = [local_exec(url, task_id, server, spec, k, site_env, work) for k, spec in enumerate(data, 1)]
    for proc in [collector, *procs]:
        proc.wait(RUN_TIMEOUT_S)
    done = repo.get_task(task_id)
    if done.phase != "Succeeded":
        raise RuntimeError(f"{task_id} ended {done.phase}; logs in {work}")
    history = list(repo.get_task_history(task_id, limit=1000))
    trained = work / "trained.bin"
    repo.download_model(f"digits-{framework}", f"v1-{task_id}", trained)
    return {
        "runtime": runtime,
        "framework": framework,
        "config": config,
        "load": load,
        "wall_s": time.monotonic() - started,
        "rounds": len(history),
        "learning_rate": task["training"].get("learning_rate"),
        "up": statistics.mean(h.bytes_up or 0 for h in history),
        "up_raw": statistics.mean(h.bytes_up_raw or 0 for h in history),
        "down": statistics.mean(h.bytes_down or 0 for h in history),
        "down_raw": statistics.mean(h.bytes_down_raw or 0 for h in history),
        "encode_ms": statistics.mean(h.encode_ms or 0.0 for h in history),
        "decode_ms": statistics.mean(h.decode_ms or 0.0 for h in history),
        "accuracy": held_out_accuracy(LIBRARY[framework], trained),
    }


def in_process(
    framework: str, config: str, rounds: int, sites: int, tmp: Path, learning_rate: float | None = LEARNING_RATE
) -> dict[str, Any]:
    """The same training without Flower or the repository: the sites' trainers (flrepo.fl.core.trainer,
    as local executions prepare them) and FedAvg in this process, updates through the same encoding
    and decoding (SiteTrainer.fit_update, compression.apply_delta). Counted as the runtimes count:
    every site's update up; the global weights down to every site twice a round (fit and evaluate)."""
    import numpy as np

    from flrepo.fl.core import compression
    from flrepo.fl.core.trainer import SiteTrainer
    from flrepo.fl.demo import held_out_accuracy
    from flrepo.fl.examples.data import partition
    from flrepo.fl.examples.digits_models import SUFFIX, write_initial
    from flrepo.fl.frameworks import Training, open_model

    spec = compression.Compression.of_task({"compression": CONFIGS[config]})
    settings = training(framework, learning_rate)
    initial = write_initial(framework, tmp / f"inproc-{framework}{SUFFIX[framework]}")
    trainers = []
    for k in range(sites):
        x, y = partition(k, sites)
        model = open_model(LIBRARY[framework], initial, {"features": 64, "classes": 10})
        trainer = SiteTrainer.split(model, x / 16.0, y, Training.from_config(settings), seed=k + 1)
        trainer.residual_file = tmp / f"residual-{framework}-{config}-{k}.npz".replace("%", "pc")
        trainer.residual_file.unlink(missing_ok=True)
        trainers.append(trainer)
    load, started = os.getloadavg()[0], time.monotonic()
    weights = trainers[0].weights()
    total = compression.Traffic()
    for server_round in range(1, rounds + 1):
        if spec.downlink == "none":
            down, sent = compression.plain_size(weights), weights
        else:
            blobs, sent, ms = compression.downlink(weights, spec.downlink)
            down, total.encode_ms = sum(map(len, blobs)), total.encode_ms + ms
        total.bytes_down += 2 * sites * down
        total.bytes_down_raw += 2 * sites * compression.plain_size(weights)
        updates = []
        for trainer in trainers:
            update, samples, metrics = trainer.fit_update(sent, {"server_round": server_round, **spec.config()})
            total.site_metrics(metrics)
            if update.blobs is None:
                local = update.weights or []
                total.bytes_up += compression.plain_size(local)
            else:
                local, ms = compression.apply_delta(sent, update.codec, update.blobs)
                total.bytes_up, total.decode_ms = total.bytes_up + sum(map(len, update.blobs)), total.decode_ms + ms
            total.bytes_up_raw += compression.plain_size(local)
            updates.append((samples, local))
        count = sum(n for n, _ in updates)
        weights = [sum(n * np.asarray(w[i], dtype=np.float64) for n, w in updates) / count for i in range(len(weights))]
        weights = [w.astype(np.asarray(s).dtype) for w, s in zip(weights, sent, strict=True)]
    model = trainers[0].model
    model.set_weights(weights)
    trained = tmp / f"inproc-trained-{framework}{SUFFIX[framework]}"
    model.save(trained)
    return {
        "runtime": "in-process",
        "framework": framework,
        "config": config,
        "load": load,
        "wall_s": time.monotonic() - started,
        "rounds": rounds,
        "learning_rate": settings.get("learning_rate"),
        **{name: getattr(total, field) / rounds for name, field in PER_ROUND.items()},
        "accuracy": held_out_accuracy(LIBRARY[framework], trained),
    }


PER_ROUND = {
    "up": "bytes_up",
    "up_raw": "bytes_up_raw",
    "down": "bytes_down",
    "down_raw": "bytes_down_raw",
    "encode_ms": "encode_ms",
    "decode_ms": "decode_ms",
}


def table(results: list[dict[str, Any]]) -> list[str]:
    """One row a run, each compared with the `none` run of its framework, runtime, rounds and learning rate."""
    lines = [
        "| runtime | model | rounds | config | up B/round | up ratio | down B/round | down ratio | accuracy "
        "| Δ to none | encode ms/round | decode ms/round |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def same(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["runtime"], r["framework"], r["rounds"], r.get("learning_rate")

    for r in results:
        base = next((b for b in results if same(b) == same(r) and b["config"] == "none"), None)
        up_ratio = f"{base['up'] / r['up']:.1f}x" if base and r["up"] else "-"
        down_ratio = f"{base['down'] / r['down']:.2f}x" if base and r["down"] else "-"
        diff = f"{100 * (r['accuracy'] - base['accuracy']):+.1f} pt" if base else "-"
        lines.append(
            f"| {r['runtime']} | {r['framework']} | {r['rounds']} | {r['config']} | {r['up']:,.0f} | {up_ratio} "
            f"| {r['down']:,.0f} "
            f"| {down_ratio} | {r['accuracy']:.3f} | {diff} | {r['encode_ms']:.1f} | {r['decode_ms']:.1f} |"
        )
    return lines


def measure(args: Any) -> list[dict[str, Any]]:
    """Every (framework, runtime, config) of `args`, one task each, against one repository."""
    import tempfile

    from flrepo.client import RepositoryClient
    from flrepo.fl.catalogue import seed
    from flrepo.fl.demo import fl_env, publisher, register_model
    from flrepo.server.embedded import EmbeddedMongo

    results: list[dict[str, Any]] = []

    def keep(result: dict[str, Any]) -> None:
        print(f"compression: {result}", flush=True)
        results.append(result)
        if args.json:  # a long run on a busy machine keeps what it measured
            with args.json.open("a") as out:
                out.write(json.dumps(result) + "\n")

    runtimes = args.runtimes.split(",")
    if runtimes == ["in-process"]:  # no repository needed
        with tempfile.TemporaryDirectory() as tmp_name:
            for framework in args.frameworks.split(","):
                for rounds in args.rounds:
                    for config in args.configs.split(","):
                        work = Path(args.workdir or tmp_name)
                        keep(in_process(framework, config, rounds, args.sites, work, args.learning_rate))
        return results
    env_db = {"FLREPO_DB_NAME": "fl", "FLREPO_GRIDFS_DB_NAME": "fl_grid", "FLREPO_LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedMongo(Path(args.workdir or tmp_name) / "db") as mongo:
        tmp = Path(args.workdir or tmp_name)
        # A server as the other benchmarks start it, given minutes to be ready on a loaded machine.
        with api_server(tmp, mongo.url, ready_timeout=600, FLREPO_DB_TIMEOUT_MS="30000", **env_db) as (url, _):
            keyring, trusted = publisher("bench")
            repo = RepositoryClient(url, keyring=keyring)
            seed(repo)
            frameworks = args.frameworks.split(",")
            for framework in frameworks:
                register_model(repo, f"digits-{framework}", "v1", framework, tmp)
            env = {**fl_env(url, trusted), "FLREPO_LOG_LEVEL": "WARNING"}
            for framework in frameworks:
                for runtime in runtimes:
                    for rounds in args.rounds:
                        for config in args.configs.split(","):
                            if runtime == "in-process":
                                keep(in_process(framework, config, rounds, args.sites, tmp, args.learning_rate))
                            else:
                                figures = (runtime, framework, config, rounds, args.sites, env, tmp)
                                keep(run(repo, url, *figures, learning_rate=args.learning_rate))
            repo.close()
    return results


def section(results: list[dict[str, Any]], command: str, sites: int) -> str:
    from bench.report import machine

    return "\n".join(
        [
            f"## Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — compression of the update path "
            f"(`{command}`)",
            "",
            f"Machine: {machine()}; load average (1 min) before each run: "
            + ", ".join(f"{r['load']:.1f}" for r in results)
            + ".",
            "",
            f"FedAvg, {sites} sites (`flrepo local-exec` on its share of the digits; `in-process`: the same "
            "trainers, codecs and FedAvg without Flower or the repository), every config the same task: "
            "the same rounds and local training (learning rate "
            + ", ".join(sorted({str(r.get("learning_rate")) for r in results}))
            + "), "
            "the Message API in plaintext on loopback. Bytes per round are all sites together, as the arrays' "
            "payloads went on the wire (Flower's framing left out), from the task's round history; ratios and "
            "Δ are against the `none` run of the same model, runtime and rounds; accuracy is the published model's "
            "on the held-out digits. EF: error feedback; `fp16` is fp16 both ways, every other config sends "
            "the downlink as plain arrays.",
            "",
            *table(results),
            "",
        ]
    )


def main() -> int:
    import argparse

    from bench.report import publish

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", default="pytorch,keras")
    parser.add_argument(
        "--runtimes",
        default="legacy,message",
        help="of legacy, message, in-process (no Flower: bench.compression.in_process)",
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help="of " + ", ".join(CONFIGS).replace("%", "%%"))
    parser.add_argument(
        "--rounds", type=lambda v: [int(r) for r in v.split(",")], default=[40], help="a count, or several: 10,20,40"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=LEARNING_RATE,
        help="the local learning rate of every config's task (default %(default)s; see above)",
    )
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--out", type=Path, help="prepend the section to this Markdown file")
    parser.add_argument("--workdir", type=Path, help="keep the logs here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also append each run's figures to this file, a JSON line each")
    parser.add_argument(
        "--report", type=Path, nargs="+", help="run nothing: the section of the runs these --json files hold"
    )
    args = parser.parse_args()
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}: of {', '.join(CONFIGS)}")
    command = (
        f"python bench/compression.py --frameworks {args.frameworks} --runtimes {args.runtimes} "
        f"--rounds {','.join(map(str, args.rounds))} --learning-rate {args.learning_rate} --sites {args.sites} "
        f"--configs {args.configs}"
    )
    if args.report:
        results = [json.loads(line) for path in args.report for line in path.read_text().splitlines() if line]
    else:
        results = measure(args)
    text = section(results, command, args.sites)
    return publish(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
