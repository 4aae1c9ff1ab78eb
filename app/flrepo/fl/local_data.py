"""A local execution's own data: a CSV, Parquet or NPZ file, a loader function, or the demo's digits.

Tables (.csv, .parquet): the label column (default `label`) is y, every other column is a numeric
feature, in file order. NPZ: arrays `x` and `y`. A loader `module:function` returns `(x, y)`.
Every problem is a `DataError` whose message names the file and what is wrong with it.
"""

from __future__ import annotations

import csv
import importlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

Arrays = tuple[NDArray[np.float64], NDArray[Any]]


class DataError(ValueError):
    """The local data cannot be used as given."""


def load(spec: str, *, label: str = "label", loader: str | None = None) -> Arrays:
    """(x, y) from `spec`: digits:K/N, a .csv, .parquet or .npz file, or from `loader` (module:function)."""
    if loader:
        return _from_loader(loader, spec)
    if spec.startswith("digits:"):
        from flrepo.fl.examples.data import parse_partition, partition

        try:
            index, parts = parse_partition(spec)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        return partition(index, parts)
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"{spec}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _checked(path, *_table(path, *_csv(path), label))
    if suffix in (".parquet", ".pq"):
        return _checked(path, *_table(path, *_parquet(path), label))
    if suffix == ".npz":
        return _checked(path, *_npz(path))
    raise DataError(
        f"{spec}: unknown data format {suffix or '(no suffix)'!r}; use .csv, .parquet or .npz, or --data-loader"
    )


def _csv(path: Path) -> tuple[list[str], list[list[Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{path}: the file is empty")
    return rows[0], [row for row in rows[1:] if any(cell.strip() for cell in row)]


def _table(path: Path, header: list[str], body: list[list[Any]], label: str) -> Arrays:
    names = [name.strip() for name in header]
    if label not in names:
        raise DataError(f"{path}: no label column {label!r} (columns: {', '.join(names)}); name it with --label")
    if not body:
        raise DataError(f"{path}: no data rows")
    index = names.index(label)
    features = [i for i in range(len(names)) if i != index]
    if not features:
        raise DataError(f"{path}: no feature columns beside the label {label!r}")
    x = np.empty((len(body), len(features)), dtype=np.float64)
    for r, row in enumerate(body):
        if len(row) != len(names):
            raise DataError(f"{path}: row {r + 2} has {len(row)} values, the header {len(names)}")
        for c, i in enumerate(features):
            x[r, c] = _number(path, row[i], names[i], r + 2)
    return x, _labels(path, [row[index] for row in body])


def _number(path: Path, value: Any, column: str, row: int) -> float:
    if value is None or str(value).strip() == "":
        raise DataError(f"{path}: column {column!r} has an empty value in row {row}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: column {column!r} is not numeric (row {row}: {str(value)[:40]!r})") from None


def _labels(path: Path, values: list[Any]) -> NDArray[Any]:
    """Integers when every label is a whole number (class ids), else floats (regression targets)."""
    try:
        numbers = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: labels must be numbers (first: {str(values[0])[:40]!r})") from None
    if np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)):
        return numbers.astype(np.int64)
    return numbers


def _parquet(path: Path) -> tuple[list[str], list[list[Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with the fl extra
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'flrepo[fl]')") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    if table.num_columns == 0:
        raise DataError(f"{path}: the file is empty")
    columns = table.to_pydict()
    return list(columns), [list(row) for row in zip(*columns.values(), strict=True)]


def _npz(path: Path) -> tuple[NDArray[Any], NDArray[Any]]:
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise DataError(f"{path}: needs arrays 'x' and 'y' (has: {', '.join(archive.files) or 'none'})")
            return archive["x"], archive["y"]
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _from_loader(loader: str, spec: str) -> Arrays:
    module_name, sep, function = loader.partition(":")
    if not sep or not module_name or not function:
        raise DataError(f"--data-loader {loader!r}: expected module:function")
    try:
        func = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"--data-loader {loader!r}: {exc}") from None
    result = func(spec) if spec else func()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise DataError(f"--data-loader {loader!r} must return (x, y), got {type(result).__name__}")
    return _checked(Path(loader), np.asarray(result[0]), np.asarray(result[1]))


def _checked(path: Path, x: Any, y: Any) -> Arrays:
    """Numeric features, one label per sample; a single feature column becomes shape (n, 1)."""
    x = np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: features are not numeric (dtype {x.dtype})")
    if len(x) == 0:
        raise DataError(f"{path}: no samples")
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} samples but {len(y)} labels")
    x = x.astype(np.float64)
    return (x.reshape(len(x), 1) if x.ndim == 1 else x), np.asarray(y)
