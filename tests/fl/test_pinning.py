"""No rollback: the training collector and local executions load only the files a task pinned, however
validly signed anything else is."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import cloudpickle
import pytest
from flwr.server.strategy import FedAvg

from flrepo.cli.exit_codes import INTEGRITY
from flrepo.client import PinMismatch, RepositoryClient
from flrepo.fl import pinning
from flrepo.fl.demo import digits_task, fl_env, register_model
from flrepo.server.embedded import free_port
from flrepo.signing import Keyring
from tests.helpers import LiveServer, create_app

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture
def signed(settings, catalogue, tmp_path):
    """A seeded repository (the catalogue's copy), the publisher's client, and a writer's client without any key."""
    keyring = catalogue.copy_to(settings)
    with (
        LiveServer(create_app(settings)) as live_server,
        RepositoryClient(live_server.url, keyring=keyring) as repo,
        RepositoryClient(live_server.url, keyring=Keyring()) as writer,
    ):
        register_model(repo, "digits", "v1", "numpy", tmp_path)
        yield repo, writer, fl_env(live_server.url, catalogue.trusted)


def _put_back(writer: RepositoryClient, name: str, data: bytes, meta: dict) -> None:
    """What any writer can do without a key: restore an old file and the signature that came with it."""
    writer.upload_strategy(name, io.BytesIO(data), filename=f"{name}.pkl", sign=False)
    writer.update_strategy_meta(name, meta)


def test_a_rolled_back_strategy_is_refused_by_the_collector(signed):
    """The reproduction: a writer puts back an older signed version of a strategy, and it loaded."""
    repo, writer, env = signed
    old_data = repo.read("/strategy/fedavg")
    old_meta = repo.get_strategy("fedavg").meta
    # The publisher releases a new version; a task is planned with it.
    repo.upload_strategy("fedavg", io.BytesIO(cloudpickle.dumps(FedAvg(fraction_fit=0.5))), sign=True)
    task = repo.create_task(digits_task("t-roll", rounds=1, clients=1)).model_dump()
    new_sha = repo.get_strategy("fedavg").sha256
    assert task["pins"]["strategy"]["sha256"] == new_sha
    # The writer rolls it back: the old file with its own, valid signature.
    _put_back(writer, "fedavg", old_data, old_meta)
    assert type(repo.load_strategy("fedavg")).__name__ == "FedAvg"  # signed: unpinned, it would load
    with pytest.raises(PinMismatch, match="pinned"):
        pinning.load_strategy(repo, task)

    collector = subprocess.run(
        [sys.executable, "-m", "flrepo.cli", "collector", "--task", "t-roll", "--address", f"127.0.0.1:{free_port()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collector.returncode == 1, collector.stderr
    status = repo.get_task("t-roll").model_dump()
    assert status["phase"] == "Failed" and status["conditions"][-1]["reason"] == "PinMismatch"
    assert status["pins"]["strategy"]["sha256"] == new_sha  # the status shows what was pinned
    # Allowing unsigned items does not lift the pin.
    with pytest.raises(PinMismatch):
        pinning.load_strategy(repo, task, allow_unsigned=True)


def test_a_replaced_transformation_is_refused_by_local_executions(signed):
    repo, _, env = signed
    task = repo.create_task(digits_task("t-trans", rounds=1, clients=1)).model_dump()
    ref = task["transformations"][0]["id"]
    assert pinning.load_transformation(repo, task, ref)(low=0, high=16)  # the pinned one loads
    # Re-published (validly signed) after the task was made: still not what the task pinned.
    repo.upload_transformation(ref, io.BytesIO(cloudpickle.dumps(dict)), sign=True)
    with pytest.raises(PinMismatch):
        pinning.load_transformation(repo, task, ref)
    command = ["local-exec", "--task", "t-trans", "--server", "127.0.0.1:1", "--data", "digits:1/2"]
    local = subprocess.run(
        [sys.executable, "-m", "flrepo.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert local.returncode == INTEGRITY and "pinned" in local.stderr, local.stderr


def test_a_replaced_model_is_refused(signed):
    repo, _, _ = signed
    task = repo.create_task(digits_task("t-model", rounds=1, clients=1)).model_dump()
    pinned = io.BytesIO()
    pinning.download_model(repo, task, pinned)
    assert pinned.getvalue() == repo.read("/model/digits/v1")
    repo.upload_model("digits", "v1", io.BytesIO(b"other weights"), filename="w.npz")
    with pytest.raises(PinMismatch):
        pinning.download_model(repo, task, io.BytesIO())


def test_tasks_without_pins_load_only_when_told(signed):
    repo, _, _ = signed
    task = repo.create_task(digits_task("t-old", rounds=1, clients=1)).model_dump()
    legacy = {**task, "pins": None}  # as a task created before pinning
    with pytest.raises(PinMismatch, match="created before pinning"):
        pinning.load_strategy(repo, legacy)
    assert type(pinning.load_strategy(repo, legacy, allow_unsigned=True)).__name__ == "FedAvg"
