"""A site's own data: tables, arrays, loader functions, and errors that name the file and the problem."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from flrepo.fl.local_data import DataError, load


def test_csv_label_anywhere_and_the_rest_features_in_order(tmp_path):
    path = tmp_path / "site.csv"
    path.write_text("a,label,b\n1,0,2.5\n3,1,4\n\n")
    x, y = load(str(path))
    assert x.tolist() == [[1.0, 2.5], [3.0, 4.0]] and y.tolist() == [0, 1] and y.dtype == np.int64
    path.write_text("a,target\n1,0.5\n2,1.5\n")
    x, y = load(str(path), label="target")
    assert y.dtype == np.float64 and y.tolist() == [0.5, 1.5]  # regression targets stay floats


def test_parquet_and_npz(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"f": [1.0, 2.0], "g": [3, 4], "label": [1, 0]}), tmp_path / "site.parquet")
    x, y = load(str(tmp_path / "site.parquet"))
    assert x.tolist() == [[1.0, 3.0], [2.0, 4.0]] and y.tolist() == [1, 0]
    np.savez(tmp_path / "site.npz", x=np.ones((3, 2, 2)), y=np.arange(3))
    x, y = load(str(tmp_path / "site.npz"))
    assert x.shape == (3, 2, 2) and y.tolist() == [0, 1, 2]  # sample shapes are kept (images, sequences)


def test_a_loader_function(tmp_path, monkeypatch):
    (tmp_path / "my_loader.py").write_text(
        "import numpy as np\ndef load(spec):\n    return np.full((4, 3), float(spec)), np.arange(4)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    x, labels = load("7", loader="my_loader:load")
    assert x.shape == (4, 3) and x[0, 0] == 7.0 and labels.tolist() == [0, 1, 2, 3]
    monkeypatch.delitem(sys.modules, "my_loader")
    with pytest.raises(DataError, match="module:function"):
        load("x", loader="my_loader")
    with pytest.raises(DataError, match="has no attribute 'nope'"):
        load("x", loader="my_loader:nope")


def test_digits_parts_stay_for_the_demo():
    x, y = load("digits:2/3")
    assert x.shape[1] == 64 and len(y) > 300
    with pytest.raises(DataError, match="digits:K/N"):
        load("digits:4/3")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "", "the file is empty"),
        ("a.csv", "f,label\n", "no data rows"),
        ("a.csv", "f,g\n1,2\n", "no label column 'label' (columns: f, g); name it with --label"),
        ("a.csv", "label\n1\n", "no feature columns"),
        ("a.csv", "f,label\nx,1\n", "column 'f' is not numeric (row 2: 'x')"),
        ("a.csv", "f,label\n,1\n", "column 'f' has an empty value in row 2"),
        ("a.csv", "f,label\n1,2,3\n", "row 2 has 3 values, the header 2"),
        ("a.csv", "f,label\n1,cat\n", "labels must be numbers"),
        ("a.txt", "1 2", "unknown data format '.txt'"),
        ("a.npz", b"not a zip", "not a readable .npz file"),
    ],
)
def test_unusable_data_is_refused_with_the_reason(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as refused:
        load(str(path))
    assert message in str(refused.value) and str(path) in str(refused.value)


def test_npz_without_x_and_y_and_missing_files(tmp_path):
    np.savez(tmp_path / "a.npz", features=np.ones(2))
    with pytest.raises(DataError, match="needs arrays 'x' and 'y' \\(has: features\\)"):
        load(str(tmp_path / "a.npz"))
    with pytest.raises(DataError, match="no such file"):
        load(str(tmp_path / "missing.csv"))
