"""The optional parts of flrepo a command may need: the service (extra `server`), the Flower runtime
(extra `fl`) and Ed25519 signing keys (extra `signing`). The core install is the SDK and this CLI; a
command that needs more says which extra to install instead of failing with an ImportError traceback."""

from __future__ import annotations

import importlib.util

# What each extra of pyproject.toml brings, by import name.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "server": (
        "fastapi",
        "fastapi_offline",
        "uvicorn",
        "pydantic_settings",
        "pymongo",
        "python_multipart",
        "yaml",
        "prometheus_client",
    ),
    "fl": ("flwr", "numpy", "sklearn", "cloudpickle", "cryptography"),
    # Ed25519 signing keys and signatures (publishers on the core install; part of `fl`).
    "signing": ("cryptography",),
}


class MissingExtra(Exception):
    """A command needs an extra that is not installed."""


def require_extra(*extras: str) -> None:
    """Raise MissingExtra, naming what to install, unless every module of `extras` is importable.

    Checked with find_spec, so nothing is imported (and nothing half-imported) here."""
    missing = [extra for extra in extras if not all(importlib.util.find_spec(m) for m in EXTRA_MODULES[extra])]
    if missing:
        what = f"the {missing[0]} extra" if len(missing) == 1 else f"the {' and '.join(missing)} extras"
        raise MissingExtra(f"needs {what}: pip install 'flrepo[{','.join(missing)}]'")
