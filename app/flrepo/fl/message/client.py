"""The ClientApp's work: the site's model and data, as its local execution prepared them.

`flrepo local-exec` loads the model, applies the task's signed transformations and checks the
data once, then writes the result to a site directory (`save_site`) and names it in the
SuperNode's node config. The ClientApp loads that directory (no download, no transformation again)
once per process, and answers each message with weights and metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from flrepo.fl.core.reporting import numbers
from flrepo.fl.core.trainer import SiteTrainer
from flrepo.fl.frameworks import Training, open_model
from flrepo.fl.message import compressed

SITE_KEY = "flrepo-site"  # the node config entry naming the site directory
WEIGHT_KEY = "num-examples"  # what Flower's message strategies weight by


def save_site(client: SiteTrainer, directory: Path, meta: dict[str, Any]) -> Path:
    """The prepared model, data and settings of this site, for the ClientApp processes."""
    directory.mkdir(parents=True, exist_ok=True)
    model_file = directory / f"model{client.model.suffix}"
    client.model.save(model_file)
    np.savez(
        directory / "data.npz", x_train=client.x_train, y_train=client.y_train, x_val=client.x_val, y_val=client.y_val
    )
    site = {
        "library": client.model.library,
        "model_file": model_file.name,
        "meta": meta,
        "training": client.training.as_config(),
        "seed": client.seed,
        "residual_file": str(client.residual_file) if client.residual_file else None,
    }
    (directory / "site.json").write_text(json.dumps(site))
    return directory


def load_site(node_config: dict[str, Any]) -> SiteTrainer:
    """The site's trainer, loaded once per process and site directory (again if the local execution
    wrote the site anew). flrepo's ClientApp worker answers every message of a task in one process
    (flrepo.fl.message.warm_worker), as a legacy site's one long-lived trainer does: each message
    sets the weights and each fit builds its optimizer afresh, so nothing else carries over, and a
    PyTorch model is not read and rebuilt from its file (~30 ms) twice a round."""
    if SITE_KEY not in node_config:
        raise RuntimeError(f"this SuperNode has no {SITE_KEY!r} in its node config: start it with `flrepo local-exec`")
    directory = Path(str(node_config[SITE_KEY]))
    stamp = (directory / "site.json").stat().st_mtime_ns
    cached = _SITES.get(directory)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    site = json.loads((directory / "site.json").read_text())
    model = open_model(site["library"], directory / site["model_file"], site["meta"])
    data = np.load(directory / "data.npz")
    split = (data["x_train"], data["y_train"], data["x_val"], data["y_val"])  # stored: no second split
    trainer = SiteTrainer(model, split, Training.from_config(site["training"]), int(site["seed"]))
    trainer.residual_file = Path(site["residual_file"]) if site.get("residual_file") else None
    _SITES.clear()  # a SuperNode serves one site
    _SITES[directory] = (stamp, trainer)
    return trainer


_SITES: dict[Path, tuple[int, SiteTrainer]] = {}


def fit_config(config: ConfigRecord) -> dict[str, Any]:
    """A message strategy's config as the framework clients read it: `server-round` (+ the task's
    `round-offset` after a resume) as server_round, other names with `_` for `-` (FedProx's
    proximal-mu)."""
    values: dict[str, Any] = {str(k).replace("-", "_"): v for k, v in config.items()}
    values["server_round"] = int(values.pop("server_round", 0)) + int(values.pop("round_offset", 0))
    return values


def train_reply(message: Message, node_config: dict[str, Any]) -> Message:
    """Train from the global weights (compressed or not); reply with the weights, or the delta
    compressed as the round's config asks (flrepo.fl.message.compressed)."""
    client = load_site(node_config)
    received = message.content.array_records["arrays"]
    weights, decode_ms = compressed.weights_of(received)
    config = fit_config(message.content.config_records.get("config", ConfigRecord()))
    update, samples, metrics = client.fit_update(weights, config, decode_ms)
    if update.blobs is not None:
        arrays = compressed.to_record(update.codec, update.blobs, weights, list(received.keys()))
    else:
        arrays = ArrayRecord(update.weights or [])
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord({**numbers(metrics), WEIGHT_KEY: samples})})
    return Message(content, reply_to=message)


def evaluate_reply(message: Message, node_config: dict[str, Any]) -> Message:
    client = load_site(node_config)
    weights, _ = compressed.weights_of(message.content.array_records["arrays"])
    config = fit_config(message.content.config_records.get("config", ConfigRecord()))
    loss, samples, metrics = client.evaluate(weights, config)
    record = MetricRecord({**numbers(metrics), "loss": float(loss), WEIGHT_KEY: samples})
    return Message(RecordDict({"metrics": record}), reply_to=message)
