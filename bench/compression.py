"""Compression of the update path (issue #24): each codec as a real task through the repository, on
the legacy and the Message-API runtime, with the digits MLP of each framework (FedAvg, 3 sites, 10
rounds; each site a `flrepo local-exec` on its share of the digits).

Every config trains the same task: the same model, data, sites, seeds, rounds and local training
(the framework's digits settings, flrepo.fl.examples.digits_models.TRAINING: 2 epochs of Adam at
0.01). The model is the MLP 64-256-10 (19,210 weights; `--hidden`), not the 64-32-10 of the demo
(2,410): top-k at 3 % moves at most 3 % of each tensor per site and round, so on the small MLP most
weights cannot move in 10 rounds and top-k is 7.5 points behind (level only after about 40 rounds,
at a learning rate of 0.003); on the wider one it ends 0.3-1.4 points behind at 10 (about at the
1-point bound, not reliably within it). `--runtimes in-process --rounds 10,20` shows such curves in
a minute or two.

Per run, from the task's round history (bytes as they went on the wire, all sites together, and
the codec milliseconds of the collector and the sites) and the published model (held-out accuracy,
loaded from its native file): uplink and downlink bytes per round, their ratio to the same
framework's and runtime's `none` run, final held-out accuracy and its difference to `none`, encode
and decode ms per round.

    python bench/compression.py [--frameworks pytorch,keras] [--runtimes legacy,message]
        [--rounds 10] [--hidden 256] [--learning-rate R] [--optimizer sgd|adam] [--epochs N]
        [--sites 3] [--configs none,fp16,...] [--json runs.jsonl] [--report runs.jsonl ...] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
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
# Every config's and framework's task (see the module's docstring).
ROUNDS, HIDDEN, LEARNING_RATE, OPTIMIZER, EPOCHS = 10, 256, None, None, None


@dataclass(frozen=True)
class Setting:
    """What every config's task shares: the MLP's hidden width and the sites' local training (the
    framework's digits settings, flrepo.fl.examples.digits_models.TRAINING, with these changes)."""

    hidden: int = HIDDEN
    learning_rate: float | None = LEARNING_RATE
    optimizer: str | None = OPTIMIZER
    epochs: int | None = EPOCHS

    def training(self, framework: str) -> dict[str, Any]:
        from flrepo.fl.examples.digits_models import TRAINING

        changes = {"learning_rate": self.learning_rate, "optimizer": self.optimizer, "epochs": self.epochs}
        return dict(TRAINING[framework]) | {k: v for k, v in changes.items() if v is not None}

    def figures(self, framework: str) -> dict[str, Any]:
        """What a run's record says of its setting."""
        return {"hidden": self.hidden, **{k: self.training(framework).get(k) for k in TRAINING_FIGURES}}


TRAINING_FIGURES = ("learning_rate", "optimizer", "epochs", "batch_size")


def model_name(framework: str, setting: Setting) -> str:
    return f"digits-{framework}-{setting.hidden}"


def training_label(result: dict[str, Any]) -> str:
    """A run's local training, as the section's text names it."""
    shown = {k: result.get(k) for k in TRAINING_FIGURES if result.get(k) is not None}
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in shown.items()) or "the framework's settings"


def model_label(result: dict[str, Any]) -> str:
    """The table's name of a run's model: its framework and layer widths."""
    hidden = result.get("hidden", 32)  # runs recorded before the width was a setting: the 64-32-10 MLP
    return result["framework"] if result["framework"] == "numpy" else f"{result['framework']} 64-{hidden}-10"


def register_model(repo: Any, framework: str, setting: Setting, workdir: Path) -> None:
    """The setting's initial MLP of `framework` in the repository (as flrepo.fl.demo.register_model
    registers the demo's, at this width)."""
    from flrepo.fl.examples.digits_models import SUFFIX, write_initial

    path = write_initial(framework, workdir / f"initial-{setting.hidden}{SUFFIX[framework]}", hidden=setting.hidden)
    name = model_name(framework, setting)
    repo.create_model(
        name, "v1", LIBRARY[framework], description=f"{framework} MLP of 8x8 digits", features=64, classes=10
    )
    repo.upload_model(name, "v1", path, filename=path.name)


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
    setting: Setting,
) -> dict[str, Any]:
    """One task; its figures."""
    from flrepo.fl.demo import digits_task, held_out_accuracy, start_collector

    task_id = f"c-{runtime}-{framework}-{config}-{rounds}".replace("%", "pc").replace("+", "-")
    work = tmp / task_id
    work.mkdir()
    strategy = "message-fedavg" if runtime == "message" else "fedavg"
    task = digits_task(task_id, strategy, rounds, sites, framework)
    model = model_name(framework, setting)
    task |= {"model": {"model_name": model, "model_version": "v1"}}
    task |= {"round_timeout": 900, "participants_timeout": 1800, "heartbeat_timeout": 600}
    task["training"] = setting.training(framework)
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
    repo.download_model(model, f"v1-{task_id}", trained)
    return {
        "runtime": runtime,
        "framework": framework,
        "config": config,
        "load": load,
        "wall_s": time.monotonic() - started,
        "rounds": len(history),
        **setting.figures(framework),
        "up": statistics.mean(h.bytes_up or 0 for h in history),
        "up_raw": statistics.mean(h.bytes_up_raw or 0 for h in history),
        "down": statistics.mean(h.bytes_down or 0 for h in history),
        "down_raw": statistics.mean(h.bytes_down_raw or 0 for h in history),
        "encode_ms": statistics.mean(h.encode_ms or 0.0 for h in history),
        "decode_ms": statistics.mean(h.decode_ms or 0.0 for h in history),
        "accuracy": held_out_accuracy(LIBRARY[framework], trained),
    }


def in_process(framework: str, config: str, rounds: int, sites: int, tmp: Path, setting: Setting) -> dict[str, Any]:
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
    settings = setting.training(framework)
    initial = write_initial(framework, tmp / f"inproc-{framework}{SUFFIX[framework]}", hidden=setting.hidden)
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
        **setting.figures(framework),
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
    """One row a run, each compared with the `none` run of the same runtime, model, rounds and training."""
    lines = [
        "| runtime | model | rounds | config | up B/round | up ratio | down B/round | down ratio | accuracy "
        "| Δ to none | encode ms/round | decode ms/round |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def same(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["runtime"], r["framework"], r["rounds"], *(r.get(k) for k in ("hidden", *TRAINING_FIGURES))

    for r in results:
        base = next((b for b in results if same(b) == same(r) and b["config"] == "none"), None)
        up_ratio = f"{base['up'] / r['up']:.1f}x" if base and r["up"] else "-"
        down_ratio = f"{base['down'] / r['down']:.2f}x" if base and r["down"] else "-"
        diff = f"{100 * (r['accuracy'] - base['accuracy']):+.1f} pt" if base else "-"
        lines.append(
            f"| {r['runtime']} | {model_label(r)} | {r['rounds']} | {r['config']} | {r['up']:,.0f} | {up_ratio} "
            f"| {r['down']:,.0f} "
            f"| {down_ratio} | {r['accuracy']:.3f} | {diff} | {r['encode_ms']:.1f} | {r['decode_ms']:.1f} |"
        )
    return lines


def measure(args: Any) -> list[dict[str, Any]]:
    """Every (framework, runtime, config) of `args`, one task each, against one repository."""
    import tempfile

    from flrepo.client import RepositoryClient
    from flrepo.fl.catalogue import seed
    from flrepo.fl.demo import fl_env, publisher
    from flrepo.server.embedded import EmbeddedMongo

    results: list[dict[str, Any]] = []

    def keep(result: dict[str, Any]) -> None:
        print(f"compression: {result}", flush=True)
        results.append(result)
        if args.json:  # a long run on a busy machine keeps what it measured
            with args.json.open("a") as out:
                out.write(json.dumps(result) + "\n")

    runtimes = args.runtimes.split(",")
    setting = Setting(args.hidden, args.learning_rate, args.optimizer, args.epochs)
    if runtimes == ["in-process"]:  # no repository needed
        with tempfile.TemporaryDirectory() as tmp_name:
            for framework in args.frameworks.split(","):
                for rounds in args.rounds:
                    for config in args.configs.split(","):
                        work = Path(args.workdir or tmp_name)
                        keep(in_process(framework, config, rounds, args.sites, work, setting))
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
                register_model(repo, framework, setting, tmp)
            env = {**fl_env(url, trusted), "FLREPO_LOG_LEVEL": "WARNING"}
            for framework in frameworks:
                for runtime in runtimes:
                    for rounds in args.rounds:
                        for config in args.configs.split(","):
                            if runtime == "in-process":
                                keep(in_process(framework, config, rounds, args.sites, tmp, setting))
                            else:
                                figures = (runtime, framework, config, rounds, args.sites, env, tmp)
                                keep(run(repo, url, *figures, setting))
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
            "the same model, rounds and local training ("
            + "; ".join(sorted({training_label(r) for r in results}))
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
        "--rounds", type=lambda v: [int(r) for r in v.split(",")], default=[ROUNDS], help="a count, or several: 10,20"
    )
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="the MLPs' hidden units (default %(default)s)")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=LEARNING_RATE,
        help="the local learning rate of every config's task (default: the framework's)",
    )
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default=OPTIMIZER, help="default: the framework's")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="local epochs a round (default: the framework's)")
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
        f"--rounds {','.join(map(str, args.rounds))} --hidden {args.hidden} "
        + (f"--learning-rate {args.learning_rate} " if args.learning_rate else "")
        + (f"--optimizer {args.optimizer} " if args.optimizer else "")
        + (f"--epochs {args.epochs} " if args.epochs else "")
        + f"--sites {args.sites} --configs {args.configs}"
    )
    if args.report:
        results = [json.loads(line) for path in args.report for line in path.read_text().splitlines() if line]
    else:
        results = measure(args)
    text = section(results, command, args.sites)
    return publish(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
