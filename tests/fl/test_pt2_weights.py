"""A .pt2's weights read and written without PyTorch (flrepo.fl.frameworks.pt2_weights) agree with
PyTorch's own load and save, on the torch this project pins: these fail loudly if its archive
changes. The ServerApp reads the task's model this way and never imports PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flrepo.fl.examples.digits_models import write_initial  # noqa: E402
from flrepo.fl.frameworks import ModelError  # noqa: E402
from flrepo.fl.frameworks.pt2_weights import Pt2Weights, Unreadable  # noqa: E402
from flrepo.fl.frameworks.torch_model import TorchModel  # noqa: E402
from flrepo.fl.task_model import open_task_model  # noqa: E402


class ConvNet(torch.nn.Module):
    """Parameters, buffers of two dtypes (BatchNorm's int64 counter), a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.norm = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4 * 6 * 6, 10, dtype=torch.float64)
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.conv(x))) * self.scale
        return self.head(h.flatten(1).double())


def conv_program(path: Path) -> Path:
    torch.manual_seed(3)
    module = ConvNet().eval()
    torch.export.save(torch.export.export(module, (torch.randn(2, 1, 8, 8),)), str(path))
    return path


@pytest.fixture(params=["mlp", "conv"])
def program(request, tmp_path) -> Path:
    if request.param == "mlp":
        return write_initial("pytorch", tmp_path / "initial.pt2")
    return conv_program(tmp_path / "conv.pt2")


def test_weights_read_without_torch_are_torchs(program):
    by_torch = TorchModel.load(program, {})
    plain = Pt2Weights.load(program)
    assert plain.names == by_torch.names
    for ours, theirs in zip(plain.get_weights(), by_torch.get_weights(), strict=True):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


def test_a_model_saved_without_torch_loads_in_torch_with_its_new_weights(program, tmp_path):
    plain = Pt2Weights.load(program)
    rng = np.random.default_rng(0)
    trained = [
        rng.uniform(0.5, 2.0, w.shape).astype(w.dtype) if w.dtype.kind == "f" else w + 7 for w in plain.get_weights()
    ]
    plain.set_weights([w.astype(np.float64) if w.dtype.kind == "f" else w for w in trained])  # cast back
    plain.save(tmp_path / "trained.pt2")

    by_torch = TorchModel.load(program, {})  # the same weights set and saved by PyTorch
    by_torch.set_weights(trained)
    by_torch.save(tmp_path / "trained-by-torch.pt2")
    ours, theirs = TorchModel.load(tmp_path / "trained.pt2", {}), TorchModel.load(tmp_path / "trained-by-torch.pt2", {})
    for a, b, w in zip(ours.get_weights(), theirs.get_weights(), trained, strict=True):
        np.testing.assert_array_equal(a, w)
        np.testing.assert_array_equal(a, b)
    shape = (5, 64) if program.name == "initial.pt2" else (2, 1, 8, 8)  # the conv program has a fixed batch
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(ours.module(x), theirs.module(x))
    # Graph, constants and sample inputs are copied as they were.
    with zipfile.ZipFile(program) as a, zipfile.ZipFile(tmp_path / "trained.pt2") as b:
        assert a.namelist() == b.namelist()
        weights = {e.member for e in plain.entries}
        for name in a.namelist():
            if name not in weights:
                assert a.read(name) == b.read(name), name


def test_weights_of_other_shapes_are_refused(program):
    plain = Pt2Weights.load(program)
    with pytest.raises(ModelError, match="do not fit"):
        plain.set_weights([w.reshape(-1) for w in plain.get_weights()][:-1])


def edited(program: Path, out: Path, change) -> Path:
    """`program` with its weights index changed by `change(index)`."""
    with zipfile.ZipFile(program) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data/weights/model_weights_config.json"):
                index = json.loads(data)
                change(index["config"])
                data = json.dumps(index).encode()
            target.writestr(info.filename, data)
    return out


def first(index: dict) -> dict:
    return next(iter(index.values()))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda index: first(index).update(use_pickle=True), "pickled"),
        (lambda index: first(index)["tensor_meta"].update(dtype=13), "dtype code 13"),  # bfloat16
        (lambda index: first(index)["tensor_meta"].update(storage_offset={"as_int": 4}), "view"),
        (lambda index: first(index)["tensor_meta"]["sizes"].reverse(), "view"),  # strides no longer fit
        (lambda index: first(index)["tensor_meta"]["sizes"].append({"as_int": 2}), "view|bytes for"),
        (lambda index: list(index.values())[1].update(path_name=first(index)["path_name"]), "share|bytes for"),
    ],
)
def test_what_it_cannot_read_for_certain_goes_to_torch(change, reason, tmp_path):
    program = edited(write_initial("pytorch", tmp_path / "initial.pt2"), tmp_path / "edited.pt2", change)
    with pytest.raises(Unreadable, match=reason):
        Pt2Weights.load(program)


def test_the_task_model_for_aggregation_falls_back_to_torch(tmp_path):
    program = write_initial("pytorch", tmp_path / "initial.pt2")
    assert isinstance(open_task_model("pytorch", program, {}, weights_only=True), Pt2Weights)
    assert isinstance(open_task_model("torch", program, {}, weights_only=False), TorchModel)
    bf16 = edited(program, tmp_path / "bf16.pt2", lambda index: first(index)["tensor_meta"].update(dtype=13))
    assert isinstance(open_task_model("pytorch", bf16, {}, weights_only=True), TorchModel)
    with pytest.raises(ModelError, match=r"expected a torch\.export program"):
        open_task_model("pytorch", write_initial("numpy", tmp_path / "initial.npz"), {}, weights_only=True)


def test_the_serverapp_reads_and_writes_a_pt2_without_importing_torch(tmp_path):
    program = write_initial("pytorch", tmp_path / "initial.pt2")
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import flrepo.fl.message.server
        from flrepo.fl.task_model import open_task_model
        model = open_task_model("pytorch", Path({str(program)!r}), {{}}, weights_only=True)
        model.set_weights([w * 2 for w in model.get_weights()])
        model.save(Path({str(tmp_path / "out.pt2")!r}))
        print(type(model).__name__, "torch" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split() == ["Pt2Weights", "False"], out.stderr
    doubled = TorchModel.load(tmp_path / "out.pt2", {}).get_weights()
    for a, b in zip(doubled, TorchModel.load(program, {}).get_weights(), strict=True):
        np.testing.assert_allclose(a, b * 2)
