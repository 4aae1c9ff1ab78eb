"""The Flower App Bundle a collector submits for a task: only a pyproject.toml naming flrepo's
ServerApp and ClientApp (installed with flrepo on both sides) and the run's settings. No code is
shipped: what runs is what each host installed."""

from __future__ import annotations

import hashlib

from flwr.cli.build import build_fab_from_files
from flwr.supercore.fab import Fab

import flrepo

SERVER_APP = "flrepo.fl.message.apps:server_app"
CLIENT_APP = "flrepo.fl.message.apps:client_app"

PYPROJECT = f"""\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "flrepo-task"
version = "{flrepo.__version__}"
description = "A task of an FL repository, trained with flrepo's ServerApp and ClientApp"
dependencies = []

[tool.flwr.app]
publisher = "flrepo"

[tool.flwr.app.components]
serverapp = "{SERVER_APP}"
clientapp = "{CLIENT_APP}"

# Set per run by the collector (StartRun's overrides).
[tool.flwr.app.config]
task-id = ""
serving-since = 0.0
resume-round = 0
allow-unsigned = false
"""


def task_fab() -> Fab:
    """The bundle, with its sha256 as Flower identifies it."""
    content, _ = build_fab_from_files({"pyproject.toml": PYPROJECT.encode()})
    return Fab(hashlib.sha256(content).hexdigest(), content, {})
