"""A task's `compression` on the update path, whichever Flower runtime carries the bytes.

Uplink: a site encodes its *delta* (its trained weights minus the global weights it received) with
the task's codec (flrepo.fl.core.codecs); with error feedback, what the codec left out (the
residual) is kept in the site's state directory, so it survives the rounds and a restart of the
local execution, and is added to the next delta. The collector adds each decoded delta to the
weights it sent *before* the task's strategy aggregates: every strategy sees plain weights and works
unchanged. A site that sends plain arrays (an older flrepo) is taken as it is. Downlink: the global
weights as fp16 (each site then trains from, and the collector adds deltas to, those rounded weights).

The collector tells its sites the settings in each round's config (CONFIG_KEYS): a site follows
what it is told, so the task's plan has one reader. `Traffic` counts the bytes each way as they go
on the wire (the arrays' payloads), what plain float arrays would have cost, and the codec time.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flrepo.fl.core import codecs
from flrepo.fl.core.claim import state_dir

log = logging.getLogger(__name__)

Weights = list[NDArray[Any]]
# What a collector adds to each round's config, and the metrics a site reports its codec time in
# (taken out again before the strategy or the task's history sees the metrics).
UPLINK, RATIO, FEEDBACK, DOWNLINK = "compression-uplink", "compression-ratio", "compression-ef", "compression-downlink"
CONFIG_KEYS = (UPLINK, RATIO, FEEDBACK, DOWNLINK)
ENCODE_MS, DECODE_MS = "flrepo-encode-ms", "flrepo-decode-ms"
SITE_METRICS = (ENCODE_MS, DECODE_MS)


@dataclass(frozen=True)
class Compression:
    """The task's `compression` (flrepo.schemas.tasks.CompressionSpec) as the runtimes use it."""

    uplink: str = "none"
    ratio: float = 0.01
    error_feedback: bool = True
    downlink: str = "none"

    @classmethod
    def of_task(cls, task: Mapping[str, Any]) -> Compression:
        spec = task.get("compression") or {}
        return cls(**{k: v for k, v in spec.items() if k in cls.__dataclass_fields__})

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> Compression:
        """From a round's config (names with `-` or `_`); nothing there: no compression."""
        values = {str(k).replace("_", "-"): v for k, v in config.items()}
        return cls(
            uplink=str(values.get(UPLINK, "none")),
            ratio=float(values.get(RATIO, 0.01)),
            error_feedback=bool(values.get(FEEDBACK, True)),
            downlink=str(values.get(DOWNLINK, "none")),
        )

    def config(self) -> dict[str, str | float | bool]:
        return {
            UPLINK: self.uplink,
            RATIO: float(self.ratio),
            FEEDBACK: bool(self.error_feedback),
            DOWNLINK: self.downlink,
        }

    @property
    def active(self) -> bool:
        return self.uplink != "none" or self.downlink != "none"


def strip_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A round's config without the compression keys (what the framework client reads)."""
    names = {*CONFIG_KEYS, *(k.replace("-", "_") for k in CONFIG_KEYS)}
    return {k: v for k, v in config.items() if k not in names}


# --- the site's side ---------------------------------------------------------------------------------


def residual_file(repo_url: str, task_id: str, seed: int, x_train: NDArray[Any]) -> Path:
    """Where a site keeps its error-feedback residual for a task: in its state directory
    (FLREPO_STATE_DIR, flrepo.fl.core.claim.state_dir), named by the repository, the task and the
    site (its seed and its training data), so that the same site restarted finds it again."""
    data = hashlib.sha256(np.ascontiguousarray(x_train).tobytes()).hexdigest()
    name = hashlib.sha256(f"{repo_url}\n{task_id}\n{seed}\n{data}".encode()).hexdigest()[:32]
    return state_dir() / "residuals" / f"{name}.npz"


def load_residual(path: Path | None, like: Weights) -> Weights | None:
    """The residual kept at `path`, if it fits the model's shapes."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            kept = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    except (OSError, ValueError) as exc:
        log.warning("error-feedback residual %s unreadable (%s): starting without it", path, exc)
        return None
    if [r.shape for r in kept] != [np.shape(w) for w in like]:
        log.warning("error-feedback residual %s does not fit the model: starting without it", path)
        return None
    return kept


def save_residual(path: Path, residual: Weights) -> None:
    """Written whole or not at all (a site killed mid-write keeps the previous one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    buffer = io.BytesIO()
    np.savez(buffer, *residual)
    partial = path.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(buffer.getvalue())
    partial.replace(path)


@dataclass
class Update:
    """What a site sends back: plain weights (`codec` none) or `codec`'s blobs of its delta."""

    codec: str
    weights: Weights | None = None
    blobs: list[bytes] | None = None
    encode_ms: float = 0.0


def encode_update(received: Weights, local: Weights, spec: Compression, residual: Path | None) -> Update:
    """The site's trained weights as the collector asked for them (see the module's docstring)."""
    if spec.uplink == "none":
        return Update("none", weights=local)
    started = time.perf_counter()
    delta = [
        np.asarray(w, dtype=np.float32) - np.asarray(r, dtype=np.float32) for w, r in zip(local, received, strict=True)
    ]
    feedback = spec.error_feedback and residual is not None
    carried = load_residual(residual, delta) if feedback else None
    if carried is not None:
        delta = [d + c for d, c in zip(delta, carried, strict=True)]
    blobs = codecs.encode_all(spec.uplink, delta, spec.ratio)
    if feedback and residual is not None:
        save_residual(residual, [d - s for d, s in zip(delta, codecs.decode_all(spec.uplink, blobs), strict=True)])
    return Update(spec.uplink, blobs=blobs, encode_ms=(time.perf_counter() - started) * 1000)


def received_weights(codec: str, blobs: list[bytes]) -> tuple[Weights, float]:
    """Global weights sent compressed (the task's downlink codec), decoded; and the ms it took."""
    started = time.perf_counter()
    weights = codecs.decode_all(codec, blobs)
    return weights, (time.perf_counter() - started) * 1000


# --- the collector's side -----------------------------------------------------------------------------


def downlink(weights: Weights, codec: str) -> tuple[list[bytes], Weights, float]:
    """The global weights as `codec` sends them: the blobs, the weights a site decodes from them (what
    its delta is relative to) and the encoding ms."""
    started = time.perf_counter()
    blobs = codecs.encode_all(codec, weights)
    sent = [d.astype(np.asarray(w).dtype) for d, w in zip(codecs.decode_all(codec, blobs), weights, strict=True)]
    return blobs, sent, (time.perf_counter() - started) * 1000


def apply_delta(sent: Weights, codec: str, blobs: list[bytes]) -> tuple[Weights, float]:
    """A site's weights: the weights it was sent plus its decoded delta; and the decoding ms."""
    started = time.perf_counter()
    if len(blobs) != len(sent):
        raise codecs.CodecError(f"{len(blobs)} compressed arrays for a model of {len(sent)}")
    delta = codecs.decode_all(codec, blobs)
    if [d.shape for d in delta] != [np.shape(s) for s in sent]:
        raise codecs.CodecError("a compressed delta does not fit the model's shapes")
    weights = [
        (np.asarray(s, dtype=np.float32) + d).astype(np.asarray(s).dtype) for s, d in zip(sent, delta, strict=True)
    ]
    return weights, (time.perf_counter() - started) * 1000


_PLAIN_HEADERS: dict[tuple[str, tuple[int, ...]], int] = {}


def plain_size(weights: Weights) -> int:
    """Bytes of `weights` as plain arrays on the wire (np.save's format, as Flower serializes them)."""
    total = 0
    for w in weights:
        array = np.asarray(w)
        key = (array.dtype.str, array.shape)
        if key not in _PLAIN_HEADERS:
            _PLAIN_HEADERS[key] = len(codecs.encode("none", array)) - array.nbytes
        total += _PLAIN_HEADERS[key] + array.nbytes
    return total


@dataclass
class Traffic:
    """Bytes each way (all sites together) as sent, and as plain arrays would have been; codec ms
    (the collector's and the sites' together)."""

    bytes_up: int = 0
    bytes_up_raw: int = 0
    bytes_down: int = 0
    bytes_down_raw: int = 0
    encode_ms: float = 0.0
    decode_ms: float = 0.0

    def add(self, other: Traffic) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def record(self) -> dict[str, int | float]:
        values = asdict(self)
        values["encode_ms"], values["decode_ms"] = round(self.encode_ms, 3), round(self.decode_ms, 3)
        return values

    def totals(self) -> dict[str, int | float]:
        """For the training result: the same figures over every round of the run, named as totals."""
        return {f"{name}_total": value for name, value in self.record().items()}

    def site_metrics(self, metrics: dict[str, Any]) -> None:
        """Take a site's codec ms out of its metrics and count them."""
        self.encode_ms += float(metrics.pop(ENCODE_MS, 0.0) or 0.0)
        self.decode_ms += float(metrics.pop(DECODE_MS, 0.0) or 0.0)


class TrafficMeter:
    """The collector's count of a task's traffic, this round's and the run's, for either runtime's
    ServerSide (flrepo.fl.legacy.compressed, flrepo.fl.message.compressed); `_sent` holds what each
    site was sent this round, keyed as the runtime names sites."""

    _sent: dict[Any, Any]

    def __init__(self, spec: Compression) -> None:
        self.spec = spec
        self.round = Traffic()
        self.total = Traffic()
        self._sent = {}

    def start_round(self) -> None:
        self.round = Traffic()
        self._sent = {}

    def end_round(self) -> dict[str, int | float]:
        self.total.add(self.round)
        return self.round.record()
