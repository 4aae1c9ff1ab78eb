"""Signed artifacts: good, missing, tampered, wrong key, rotation; loading in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.client import IntegrityError, RepositoryClient
from app.fl.catalogue import STRATEGIES, seed, strategy_artifact
from app.signing import Keyring, SignatureError, sign, verify

KEYS = Keyring("k1", {"k1": b"secret-one"})


def test_good_signature_verifies():
    data = b"pickled bytes"
    meta = sign(KEYS, "strategy", "fedavg", data)
    verify(KEYS, "strategy", "fedavg", data, meta, allow_unsigned=False)


@pytest.mark.parametrize(
    "case",
    ["missing", "tampered", "wrong_key", "unknown_key_id", "other_item", "other_kind"],
)
def test_bad_signatures_are_refused(case):
    data = b"pickled bytes"
    meta = sign(KEYS, "strategy", "fedavg", data)
    kind, name = "strategy", "fedavg"
    keyring = KEYS
    if case == "missing":
        meta = {}
    elif case == "tampered":
        data = b"pickled bytez"
    elif case == "wrong_key":
        keyring = Keyring("k1", {"k1": b"another secret"})
    elif case == "unknown_key_id":
        keyring = Keyring("k2", {"k2": b"secret-one"})
    elif case == "other_item":
        name = "fedprox"  # a signature cannot be replayed onto another item
    elif case == "other_kind":
        kind = "transformation"
    with pytest.raises(SignatureError):
        verify(keyring, kind, name, data, meta, allow_unsigned=False)


def test_allow_unsigned_is_the_only_way_around_and_warns(caplog):
    verify(KEYS, "strategy", "x", b"data", {}, allow_unsigned=True)
    assert "WITHOUT checking its signature" in caplog.text


def test_key_rotation_from_environment():
    old = sign(Keyring("old", {"old": b"o"}), "strategy", "s", b"d")
    ring = Keyring.from_env({"FLREPO_SIGNING_KEY": "n", "FLREPO_SIGNING_KEY_ID": "new", "FLREPO_VERIFY_KEYS": "old:o"})
    verify(ring, "strategy", "s", b"d", old, allow_unsigned=False)  # old signatures still verify
    assert sign(ring, "strategy", "s", b"d")["key_id"] == "new"  # new ones use the new key
    with pytest.raises(ValueError):
        Keyring.from_env({"FLREPO_VERIFY_KEYS": "no-colon"})
    with pytest.raises(SignatureError):
        sign(Keyring.from_env({}), "strategy", "s", b"d")


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
    with RepositoryClient(live_server.url, keyring=Keyring("k1", {"k1": b"wrong"})) as wrong:
        with pytest.raises(SignatureError):
            wrong.load_strategy("fedprox")
    repo.close()


def test_seed_is_idempotent_and_loads_in_a_fresh_process(live_server):
    repo = RepositoryClient(live_server.url, keyring=KEYS)
    first = seed(repo)
    assert len(first["added"]) == len(STRATEGIES) + 3 and first["kept"] == []
    second = seed(repo)
    assert second["added"] == [] and len(second["kept"]) == len(first["added"])
    meta = repo.get_strategy("fedprox").meta
    assert meta["class"] == "flwr.server.strategy.FedProx" and "proximal_mu" in meta["parameters"]
    assert meta["flwr"].startswith("1.41")
    repo.close()
    code = f"""
import json, os
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
import numpy as np
from flwr.server.strategy import Strategy
from app.client import RepositoryClient
from app.signing import Keyring
repo = RepositoryClient({live_server.url!r}, keyring=Keyring("k1", {{"k1": b"secret-one"}}))
out = {{}}
for name in {sorted(STRATEGIES)!r}:
    s = repo.load_strategy(name)
    out[name] = isinstance(s, Strategy) and type(s).__name__
t = repo.load_transformation("flrepo.min_max_scaling")(low=0, high=16)
x, y = t(np.array([[0.0, 8.0, 16.0]]), np.array([1]))
out["scaled"] = x.tolist()
onehot = repo.load_transformation("flrepo.one_hot_labels")(categories=3)
out["onehot"] = onehot(x, np.array([2]))[1].tolist()
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for name in STRATEGIES:
        assert loaded[name] == STRATEGIES[name][0], name
    assert loaded["scaled"] == [[0.0, 0.5, 1.0]] and loaded["onehot"] == [[0.0, 0.0, 1.0]]


def test_strategy_artifacts_record_their_parameters():
    _, meta = strategy_artifact("fedavg")
    assert meta["parameters"]["fraction_fit"] == 1.0 and meta["parameters"]["min_fit_clients"] == 2
