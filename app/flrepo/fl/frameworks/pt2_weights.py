"""A torch.export program's (`.pt2`) weights, read and written without PyTorch, for the side that
aggregates.

The ServerApp holds the task's model only to hand its initial weights to the strategy and to write
the trained model at the end; it never runs it. Importing PyTorch and rebuilding the program
(`torch.export.load`) cost it ~2.5 s of CPU per task, before the first round, on the cores the
sites start on. A `.pt2` is a ZIP archive whose weights are raw tensors, one entry each, indexed by
`data/weights/model_weights_config.json` (torch 2.6+'s archive, `archive_format` "pt2"). This reads
them as NumPy arrays, in the index's order (the order the loaded program's `state_dict` has, which is
what the sites' `TorchModel` sends), and writes the trained model as the same archive with those
entries' bytes replaced: graph, constants and sample inputs are copied as they are.

Anything it cannot read for certain (a pickled weight, a dtype NumPy lacks, a strided or offset
view, two weights on one entry, a size that does not add up) raises `Unreadable`, and the caller
loads the program with PyTorch instead. tests/fl/test_pt2_weights.py checks both ways agree on the
torch this project pins, and fails loudly if its archive changes.
"""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from flrepo.fl.frameworks.base import LocalModel, ModelError, Training, Weights

WEIGHTS_INDEX = "data/weights/model_weights_config.json"
WEIGHTS_DIR = "data/weights/"
STRIDED = 7  # torch._export.serde.schema.Layout.Strided
# torch._export.serde.schema.ScalarType -> NumPy; the ones NumPy has no type for are left out.
DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    6: np.dtype(np.float16),
    7: np.dtype(np.float32),
    8: np.dtype(np.float64),
    10: np.dtype(np.complex64),
    11: np.dtype(np.complex128),
    12: np.dtype(np.bool_),
    28: np.dtype(np.uint16),
    34: np.dtype(np.uint32),
    35: np.dtype(np.uint64),
}
COPY_CHUNK = 1 << 20


class Unreadable(ValueError):
    """Not a .pt2 this module reads for certain: load it with PyTorch."""


@dataclass(frozen=True)
class Entry:
    name: str  # the state_dict key
    member: str  # its archive entry
    dtype: np.dtype[Any]
    shape: tuple[int, ...]


def _root(names: list[str]) -> str:
    """The archive's top folder (torch names it after the file it first wrote)."""
    marks = [n for n in names if n == "archive_format" or n.endswith("/archive_format")]
    if len(marks) != 1:
        raise Unreadable("no single archive_format entry")
    return marks[0].removesuffix("archive_format")


def _int(value: Any) -> int:
    if not isinstance(value, Mapping) or not isinstance(value.get("as_int"), int):
        raise Unreadable(f"symbolic size {value!r}")
    return int(value["as_int"])


def _entry(name: str, spec: Mapping[str, Any], root: str) -> Entry:
    meta = spec.get("tensor_meta") or {}
    if spec.get("use_pickle") or not spec.get("path_name"):
        raise Unreadable(f"{name} is pickled")
    dtype = DTYPES.get(meta.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise Unreadable(f"{name} has dtype code {meta.get('dtype')!r}")
    if meta.get("layout") != STRIDED:
        raise Unreadable(f"{name} is not a dense tensor")
    shape = tuple(_int(size) for size in meta.get("sizes", []))
    strides = tuple(_int(stride) for stride in meta.get("strides", []))
    contiguous = tuple(math.prod(shape[k + 1 :]) for k in range(len(shape)))
    if _int(meta.get("storage_offset", {"as_int": 0})) != 0 or (strides != contiguous and math.prod(shape) > 1):
        raise Unreadable(f"{name} is a view (strides {strides}, offset)")
    return Entry(name, f"{root}{WEIGHTS_DIR}{spec['path_name']}", dtype, shape)


def read_index(archive: zipfile.ZipFile) -> list[Entry]:
    """The archive's weights in state_dict order; Unreadable unless every one is a plain tensor."""
    names = archive.namelist()
    root = _root(names)
    if archive.read(f"{root}archive_format").strip() != b"pt2":
        raise Unreadable("archive_format is not pt2")
    if f"{root}byteorder" in names and archive.read(f"{root}byteorder").strip() != b"little":
        raise Unreadable("big-endian weights")
    try:
        index = json.loads(archive.read(f"{root}{WEIGHTS_INDEX}"))["config"]
    except (KeyError, ValueError, TypeError) as exc:
        raise Unreadable(f"no weights index: {exc}") from None
    entries = [_entry(str(name), spec, root) for name, spec in index.items()]
    members = [entry.member for entry in entries]
    if len(set(members)) != len(members):
        raise Unreadable("weights share an entry")
    for entry in entries:
        size = archive.getinfo(entry.member).file_size if entry.member in names else -1
        if size != math.prod(entry.shape) * entry.dtype.itemsize:
            raise Unreadable(f"{entry.name}: {size} bytes for {entry.shape} of {entry.dtype}")
    return entries


class Pt2Weights(LocalModel):
    """The weights of a `.pt2` as a LocalModel that cannot train: see the module docstring."""

    library: ClassVar[str] = "pytorch"
    suffix: ClassVar[str] = ".pt2"

    def __init__(self, path: Path, entries: list[Entry], weights: Weights) -> None:
        self.path, self.entries, self.weights = path, entries, weights

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any] | None = None) -> Pt2Weights:
        """Unreadable when PyTorch must load it instead (ModelError for a file that is no ZIP)."""
        try:
            with zipfile.ZipFile(path) as archive:
                entries = read_index(archive)
                weights = [
                    np.frombuffer(archive.read(e.member), dtype=e.dtype).reshape(e.shape).copy() for e in entries
                ]
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelError(f"not a torch.export program (.pt2): {exc}") from None
        return cls(path, entries, weights)

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def get_weights(self) -> Weights:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Weights) -> None:
        self.check_weights(weights)
        self.weights = [np.asarray(w).astype(e.dtype, copy=True) for w, e in zip(weights, self.entries, strict=True)]

    def save(self, path: Path) -> None:
        """The source archive with the weights' entries holding the current weights."""
        replaced = {entry.member: weight for entry, weight in zip(self.entries, self.weights, strict=True)}
        with zipfile.ZipFile(self.path) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
            for info in source.infolist():
                item = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                weight = replaced.get(info.filename)
                size = weight.nbytes if weight is not None else info.file_size
                with out.open(item, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as target:
                    if weight is not None:
                        target.write(np.ascontiguousarray(weight).data.cast("B"))
                    else:
                        with source.open(info) as member:
                            shutil.copyfileobj(member, target, COPY_CHUNK)

    def sample_shape(self) -> tuple[int, ...] | None:
        return None

    def fit(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> dict[str, float]:
        raise ModelError("a .pt2 read without PyTorch is not trained (the aggregating side only)")

    def evaluate(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> tuple[float, dict[str, float]]:
        raise ModelError("a .pt2 read without PyTorch is not evaluated (the aggregating side only)")
