"""Framework clients, chosen by a model's `meta.library`: `numpy`, `pytorch` (torch.export `.pt2`, or
aerOS's ZIP of a TorchScript `scripted_model.pt`) and `keras` (`.keras`, legacy `.h5`, or aerOS's ZIP of a
TensorFlow SavedModel, with the `tensorflow` extra). Each loads a self-contained file without running the
uploader's code. `open_model` checks that the file is what its library says before loading it.
"""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flrepo.fl.frameworks.aeros_archives import archive_format
from flrepo.fl.frameworks.base import (
    TRAINING_KEYS,
    LocalModel,
    ModelError,
    Training,
    Weights,
    unknown_training_keys,
)

__all__ = [
    "LIBRARIES",
    "TRAINING_KEYS",
    "LocalModel",
    "ModelError",
    "Training",
    "Weights",
    "client_for",
    "file_format",
    "library_name",
    "open_model",
    "unknown_training_keys",
]

# library -> (module, class, the file formats it loads, the extra that installs it)
LIBRARIES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "numpy": ("flrepo.fl.frameworks.numpy_model", "NumpyModel", ("npz",), "fl"),
    "pytorch": ("flrepo.fl.frameworks.torch_model", "TorchModel", ("pt2", "torchscript"), "pytorch"),
    "keras": ("flrepo.fl.frameworks.keras_model", "KerasModel", ("keras", "h5", "savedmodel"), "keras"),
}
# Formats aerOS's local operations store, each with a client of its own: format -> (module, class, extra).
FORMAT_CLIENTS: dict[str, tuple[str, str, str]] = {
    "torchscript": ("flrepo.fl.frameworks.torchscript_model", "TorchScriptModel", "pytorch"),
    "savedmodel": ("flrepo.fl.frameworks.savedmodel_model", "SavedModelModel", "tensorflow"),
}
# Other names users give the same libraries in `meta.library`.
ALIASES = {"torch": "pytorch", "tensorflow": "keras", "tf.keras": "keras", "tf": "keras"}
FORMAT_NAMES = {
    "npz": "a NumPy .npz weights file",
    "pt2": "a torch.export program (.pt2)",
    "keras": "a Keras .keras file",
    "h5": "an HDF5 (.h5) file",
    "pickle": "a Python pickle (never loaded: it would run code)",
    "torchscript": "an aerOS TorchScript archive (a ZIP holding scripted_model.pt)",
    "savedmodel": "an aerOS TensorFlow SavedModel archive (a ZIP holding saved_model.pb)",
    "zip": "a ZIP archive of unknown content",
    "unknown": "of an unknown format",
}
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def library_name(library: str | None) -> str:
    """The client name for a `meta.library` value (aliases resolved); ModelError when there is none."""
    name = str(library or "").strip().lower()
    name = ALIASES.get(name, name)
    if name not in LIBRARIES:
        raise ModelError(
            f"no local client for library {library!r}: flrepo trains {', '.join(LIBRARIES)} models "
            "(meta.library of the task's model)"
        )
    return name


def client_for(library: str | None) -> type[LocalModel]:
    """The client class for `library`; ModelError naming the extra when it is not installed."""
    name = library_name(library)
    module_name, class_name, _, extra = LIBRARIES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if name == "keras" and exc.name in ("tensorflow", "jax"):  # keras is there, its backend is not
            raise ModelError(
                f"keras needs a backend ({exc.name} is its choice here): pip install 'flrepo[pytorch]' for torch, "
                "or set KERAS_BACKEND to an installed one"
            ) from None
        raise ModelError(f"training {name} models needs {exc.name or 'more'}: pip install 'flrepo[{extra}]'") from None
    cls: type[LocalModel] = getattr(module, class_name)
    return cls


def file_format(path: Path) -> str:
    """What a model file is, from its content (never from its name): see FORMAT_NAMES."""
    with path.open("rb") as f:
        head = f.read(8)
    if head == HDF5_MAGIC:
        return "h5"
    if head[:1] == b"\x80":
        return "pickle"
    if not head.startswith(b"PK"):
        return "unknown"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return "unknown"
    if any(n == "archive_format" or n.endswith("/archive_format") for n in names):
        return "pt2"
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "keras"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return archive_format(names)


def open_model(library: str | None, path: Path, meta: Mapping[str, Any] | None = None) -> LocalModel:
    """Load the model file `path` with the client of `library`, after checking the file is of a
    format that library loads (ModelError naming both otherwise)."""
    name = library_name(library)
    expected = LIBRARIES[name][2]
    found = file_format(path)
    if found not in expected:
        wanted = " or ".join(FORMAT_NAMES[f] for f in expected)
        raise ModelError(f"the model's library is {name!r} but its file is {FORMAT_NAMES[found]}; expected {wanted}")
    if found in FORMAT_CLIENTS:
        return _format_client(found).load(path, meta or {})
    return client_for(name).load(path, meta or {})


def _format_client(found: str) -> type[LocalModel]:
    module_name, class_name, extra = FORMAT_CLIENTS[found]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"training {FORMAT_NAMES[found]} needs {exc.name or 'more'}: pip install 'flrepo[{extra}]'"
        ) from None
    cls: type[LocalModel] = getattr(module, class_name)
    return cls
