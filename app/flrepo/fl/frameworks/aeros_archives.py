"""The ZIP archives in which aerOS's local operations store models, recognised by their members only
(no framework imported): `scripted_model.pt` (PyTorch, TorchScript) or a TensorFlow SavedModel
(`saved_model.pb` with its `variables/`), at the top of the archive or in its one folder, where aerOS's
loader finds them (`check_loading_path` goes down a folder while that is all there is).
"""

from __future__ import annotations

SCRIPTED_MODEL = "scripted_model.pt"
SAVED_MODEL = "saved_model.pb"


def _member(names: list[str], wanted: str) -> str | None:
    if wanted in names:
        return wanted
    nested = [n for n in names if n.endswith("/" + wanted) and n.count("/") == 1]
    return nested[0] if len(nested) == 1 else None


def scripted_member(names: list[str]) -> str | None:
    """The archive's `scripted_model.pt`, or None."""
    return _member(names, SCRIPTED_MODEL)


def saved_model_folder(names: list[str]) -> str | None:
    """The folder of the archive's SavedModel ("" for the top), or None when there is none."""
    member = _member(names, SAVED_MODEL)
    return None if member is None else member.removesuffix(SAVED_MODEL)


def archive_format(names: list[str]) -> str:
    """`torchscript`, `savedmodel`, or `zip` for any other archive."""
    if scripted_member(names) is not None:
        return "torchscript"
    if saved_model_folder(names) is not None:
        return "savedmodel"
    return "zip"
