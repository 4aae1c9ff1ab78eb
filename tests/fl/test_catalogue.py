"""The signed catalogue: seeding, tamper detection in GridFS, loading in a fresh process, and items
seeded before the package was renamed from `app` to `flrepo`."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flrepo.client import IntegrityError, RepositoryClient
from flrepo.fl import transformations
from flrepo.fl.catalogue import MESSAGE_STRATEGIES, STRATEGIES, seed, strategy_artifact
from flrepo.server.backup import restore
from flrepo.signing import Keyring, SignatureError, new_key_pair, public_key_of

PRIVATE = bytes(range(32))
KEYS = Keyring.signer("k1", PRIVATE)
# `flrepo seed` (flwr 1.41) into a fresh store, then `flrepo dump`, made with the package still named
# `app` (commit 7548ff0) and signed with HMAC under this secret (signatures were HMAC then): its
# transformations were pickled as `app.fl....`. HMAC-signed items load only with the migration flag.
SEEDED_BEFORE_RENAME = Path(__file__).resolve().parents[1] / "data" / "seeded-before-rename.tar.gz"
LEGACY = {"fixture": b"pre-rename-fixture-key"}
PRE_RENAME_KEYS = Keyring(legacy_hmac=LEGACY, allow_legacy_hmac=True)


def test_tampered_file_in_gridfs_is_refused(live_server, raw_db):
    repo = RepositoryClient(live_server.url, keyring=KEYS)
    seed(repo)
    assert repo.load_strategy("fedavg").__class__.__name__ == "FedAvg"
    file_id = raw_db[1]["fs.files"].find_one({"filename": "fedavg.pkl"})["_id"]
    chunk = raw_db[1]["fs.chunks"].find_one({"files_id": file_id})
    data = bytearray(chunk["data"])
    data[-1] ^= 0xFF
    raw_db[1]["fs.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(data)}})
    # The server's recorded sha256 (the ETag) catches it first ...
    with pytest.raises(IntegrityError, match="ETag"):
        repo.load_strategy("fedavg")
    # ... and without it, the signature does.
    raw_db[1]["fs.files"].update_one({"_id": file_id}, {"$unset": {"sha256": ""}})
    raw_db[0]["strategies"].update_one({"strategy_name": "fedavg"}, {"$unset": {"sha256": ""}})
    with pytest.raises(SignatureError):
        repo.load_strategy("fedavg")
    with RepositoryClient(live_server.url, keyring=Keyring.verifier({"k1": new_key_pair()[1]})) as wrong:
        with pytest.raises(SignatureError):
            wrong.load_strategy("fedprox")
    repo.close()


def test_seed_is_idempotent_and_loads_in_a_fresh_process(live_server):
    repo = RepositoryClient(live_server.url, keyring=KEYS)
    first = seed(repo)
    assert len(first["added"]) == len(STRATEGIES) + len(MESSAGE_STRATEGIES) + 3 and first["kept"] == []
    # A new user sees the Message-API strategies first; the legacy ones follow, for aerOS.
    assert first["added"][: len(MESSAGE_STRATEGIES)] == [f"strategy {name}" for name in MESSAGE_STRATEGIES]
    assert first["added"][len(MESSAGE_STRATEGIES)] == f"strategy {next(iter(STRATEGIES))}"
    second = seed(repo)
    assert second["added"] == [] and len(second["kept"]) == len(first["added"])
    meta = repo.get_strategy("fedprox").meta
    assert meta["class"] == "flwr.server.strategy.FedProx" and "proximal_mu" in meta["parameters"]
    assert meta["flwr"] == importlib.metadata.version("flwr")  # the flwr that pickled it
    repo.close()
    code = f"""
import json, os
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
import numpy as np
from flwr.server.strategy import Strategy
from flrepo.client import RepositoryClient
from flrepo.signing import Keyring
# The public key only: a local execution verifies, it cannot sign.
repo = RepositoryClient({live_server.url!r}, keyring=Keyring.verifier({{"k1": {public_key_of(PRIVATE)!r}}}))
out = {{}}
for name in {sorted(STRATEGIES)!r}:
    s = repo.load_strategy(name)
    out[name] = isinstance(s, Strategy) and type(s).__name__
from flwr.serverapp.strategy import Strategy as MessageStrategy
for name in {sorted(MESSAGE_STRATEGIES)!r}:
    s = repo.load_strategy(name)
    out[name] = isinstance(s, MessageStrategy) and type(s).__name__
t = repo.load_transformation("flrepo.min_max_scaling")(low=0, high=16)
x, y = t(np.array([[0.0, 8.0, 16.0]]), np.array([1]))
out["scaled"] = x.tolist()
onehot = repo.load_transformation("flrepo.one_hot_labels")(categories=3)
out["onehot"] = onehot(x, np.array([2]))[1].tolist()
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for name, (class_name, _) in [*STRATEGIES.items(), *MESSAGE_STRATEGIES.items()]:
        assert loaded[name] == class_name, name
    assert repo_meta_runtime(live_server.url) == ("legacy", "message")
    assert loaded["scaled"] == [[0.0, 0.5, 1.0]] and loaded["onehot"] == [[0.0, 0.0, 1.0]]


def repo_meta_runtime(url):
    with RepositoryClient(url, keyring=KEYS) as repo:
        return repo.get_strategy("fedavg").meta["runtime"], repo.get_strategy("message-fedavg").meta["runtime"]


def test_strategy_artifacts_record_their_parameters():
    _, meta = strategy_artifact("fedavg")
    assert meta["parameters"]["fraction_fit"] == 1.0 and meta["parameters"]["min_fit_clients"] == 2


async def test_items_seeded_before_the_rename_still_load(settings):
    report = await restore(settings, SEEDED_BEFORE_RENAME)
    assert report.documents["strategies"] == len(STRATEGIES) and report.documents["transformations"] == 3
    from tests.helpers import LiveServer, create_app

    with LiveServer(create_app(settings)) as server:
        # HMAC-signed: refused without the explicit migration flag, even with the right secret ...
        unflagged = Keyring(legacy_hmac=LEGACY)
        with RepositoryClient(server.url, keyring=unflagged) as repo:
            with pytest.raises(SignatureError, match="legacy HMAC"):
                await asyncio.to_thread(repo.load_strategy, "fedavg")
            with pytest.raises(SignatureError, match="FLREPO_ALLOW_LEGACY_HMAC"):
                await asyncio.to_thread(repo.load_transformation, "flrepo.min_max_scaling")
    # ... and loaded with it.
    with LiveServer(create_app(settings)) as server, RepositoryClient(server.url, keyring=PRE_RENAME_KEYS) as repo:
        for cls in transformations.BUILTIN:
            loaded = await asyncio.to_thread(repo.load_transformation, cls.AEROS["id"])
            assert loaded is cls  # `app.fl.transformations.X` resolved to the class under its new name
        for name, (class_name, _) in STRATEGIES.items():
            strategy = await asyncio.to_thread(repo.load_strategy, name)
            assert type(strategy).__name__ == class_name  # pickled by flwr 1.41, loaded by the pinned flwr


@pytest.mark.parametrize("own_module", [False, True])
async def test_a_users_own_app_package_does_not_break_pre_rename_items(settings, tmp_path, monkeypatch, own_module):
    """With a user's `app` package importable, old items still load; a user's own
    `app.fl.transformations` (their pickles name it too) keeps its own classes."""
    package = tmp_path / "app" / "fl"
    package.mkdir(parents=True)
    (tmp_path / "app" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    if own_module:
        (package / "transformations.py").write_text("class MinMaxScaling:\n    OWNER = 'user'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
        monkeypatch.delitem(sys.modules, name)
    await restore(settings, SEEDED_BEFORE_RENAME)
    from tests.helpers import LiveServer, create_app

    with LiveServer(create_app(settings)) as server, RepositoryClient(server.url, keyring=PRE_RENAME_KEYS) as repo:
        loaded = await asyncio.to_thread(repo.load_transformation, "flrepo.min_max_scaling")
    if own_module:
        assert getattr(loaded, "OWNER", None) == "user"
    else:
        assert loaded is transformations.MinMaxScaling


async def test_seed_re_signs_a_legacy_catalogue(settings, caplog):
    """`flrepo seed` with an Ed25519 key replaces every HMAC-signed item with a fresh one it signs; then
    a verifier holding only the public key loads them, without any migration flag."""
    await restore(settings, SEEDED_BEFORE_RENAME)
    from tests.helpers import LiveServer, create_app

    private, public = new_key_pair()
    with LiveServer(create_app(settings)) as server:
        with RepositoryClient(server.url, keyring=Keyring.signer("ops", private)) as publisher:
            report = await asyncio.to_thread(seed, publisher)
            # The dump predates the Message-API strategies: those are added, the rest re-signed.
            assert report["added"] == [f"strategy {name}" for name in MESSAGE_STRATEGIES] and report["kept"] == []
            assert len(report["resigned"]) == len(STRATEGIES) + 3
            again = await asyncio.to_thread(seed, publisher)
            total = len(STRATEGIES) + len(MESSAGE_STRATEGIES) + 3
            assert len(again["kept"]) == total and again["resigned"] == []
        with RepositoryClient(server.url, keyring=Keyring.verifier({"ops": public})) as verifier:
            meta = (await asyncio.to_thread(verifier.get_strategy, "fedprox")).meta
            assert meta["algorithm"] == "ed25519" and meta["key_id"] == "ops"
            strategy = await asyncio.to_thread(verifier.load_strategy, "fedprox")
            assert type(strategy).__name__ == "FedProx"
            loaded = await asyncio.to_thread(verifier.load_transformation, "flrepo.one_hot_labels")
            assert loaded is transformations.OneHotLabels
