"""Adopting an unsigned aerOS strategy or transformation: `flrepo strategies adopt NAME` shows what the
item is (class, size, sha256, what it imports; nothing unpickled) and signs it with the publisher's key
after confirmation, so loaders need no `--allow-unsigned`."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import pytest

from flrepo.cli.exit_codes import INTEGRITY, OK, USAGE
from flrepo.client import RepositoryClient, SignatureError
from flrepo.client.adopt import pickle_imports
from flrepo.signing import Keyring, encode_key, public_key_of

# aerOS's own strategy file (its unit tests' data): a flwr FedAvg pickled by aerOS's flwr 1.3.0.
AEROS_STRATEGY = (
    Path(__file__).resolve().parents[1] / "data" / "aeros" / "application" / "tests" / "data" / "strategy_test.pkl"
)
SIGNING_KEY = encode_key(bytes(range(32)))
TRUSTED = Keyring.verifier({"admin": public_key_of(bytes(range(32)))})


def test_pickle_imports_are_read_without_unpickling():
    assert pickle_imports(AEROS_STRATEGY.read_bytes()) == ["flwr.server.strategy.fedavg.FedAvg"]
    # Protocol 0 names its globals with GLOBAL, later ones with STACK_GLOBAL (here through the memo).
    for protocol in (0, 2, 5):
        data = pickle.dumps([io.BytesIO, io.BytesIO, hashlib.sha256], protocol=protocol)
        assert pickle_imports(data) == ["_io.BytesIO", "_hashlib.openssl_sha256"], protocol
    with pytest.raises(ValueError, match="not a pickle"):
        pickle_imports(b"PK\x03\x04 a zip")


def _unsigned_aeros_strategy(live_server) -> None:
    with RepositoryClient(live_server.url, keyring=Keyring.verifier({})) as repo:
        repo.create_strategy("aeros-fedavg", "aerOS FedAvg")
        repo.upload_strategy("aeros-fedavg", AEROS_STRATEGY, sign=False)


def test_adopting_an_aeros_strategy_lets_it_load_without_allow_unsigned(flrepo, live_server, monkeypatch):
    _unsigned_aeros_strategy(live_server)
    with RepositoryClient(live_server.url, keyring=TRUSTED) as repo, pytest.raises(SignatureError, match="not signed"):
        repo.load_strategy("aeros-fedavg")
    # Without a key nothing is shown or signed; without a terminal or --yes nothing is signed.
    monkeypatch.delenv("FLREPO_SIGNING_KEY", raising=False)
    code, _, err = flrepo("strategies", "adopt", "aeros-fedavg", "--yes")
    assert code == USAGE and "no signing key" in err
    monkeypatch.setenv("FLREPO_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("FLREPO_SIGNING_KEY_ID", "admin")
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a terminal
    code, _, err = flrepo("strategies", "adopt", "aeros-fedavg")
    assert code == USAGE and "--yes" in err
    with RepositoryClient(live_server.url, keyring=TRUSTED) as repo, pytest.raises(SignatureError):
        repo.load_strategy("aeros-fedavg")

    code, out, err = flrepo("strategies", "adopt", "aeros-fedavg", "--yes")
    assert code == OK, err
    data = AEROS_STRATEGY.read_bytes()
    assert "class:   flwr.server.strategy.fedavg.FedAvg" in err
    assert f"size:    {len(data)} bytes" in err and hashlib.sha256(data).hexdigest() in err
    shown = json.loads(out)
    assert shown["class"] == "flwr.server.strategy.fedavg.FedAvg" and shown["key_id"] == "admin"
    with RepositoryClient(live_server.url, keyring=TRUSTED) as repo:
        strategy = repo.load_strategy("aeros-fedavg")  # no allow_unsigned
        assert type(strategy).__name__ == "FedAvg" and strategy.min_fit_clients == 2
        assert repo.get_strategy("aeros-fedavg").strategy_description == "aerOS FedAvg"  # the rest of the item kept


def test_a_file_replaced_after_adoption_is_refused(flrepo, live_server, monkeypatch, tmp_path):
    _unsigned_aeros_strategy(live_server)
    monkeypatch.setenv("FLREPO_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("FLREPO_SIGNING_KEY_ID", "admin")
    assert flrepo("strategies", "adopt", "aeros-fedavg", "--yes")[0] == OK
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"not": "the adopted file"}))
    with RepositoryClient(live_server.url, keyring=Keyring.verifier({})) as repo:
        repo.upload("/strategy/aeros-fedavg", other)  # a plain PUT, as aerOS clients upload
    monkeypatch.setenv("FLREPO_TRUSTED_KEYS", f"admin:{encode_key(public_key_of(bytes(range(32))))}")
    monkeypatch.delenv("FLREPO_SIGNING_KEY")
    code, _, err = flrepo("strategies", "download", "aeros-fedavg", "-o", str(tmp_path / "got.pkl"))
    assert code == INTEGRITY and not (tmp_path / "got.pkl").exists(), err


def test_adopting_a_transformation(flrepo, live_server, monkeypatch, tmp_path):
    body = {"parameter_types": {}, "default_values": {}, "outputs": ["np.ndarray"], "needs": {}}
    with RepositoryClient(live_server.url, keyring=Keyring.verifier({})) as repo:
        repo.create_transformation("application.tests.categorical_transformation", **body)
        pickled = tmp_path / "t.pkl"
        pickled.write_bytes(pickle.dumps(io.BytesIO))
        repo.upload_transformation("application.tests.categorical_transformation", pickled, sign=False)
    monkeypatch.setenv("FLREPO_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("FLREPO_SIGNING_KEY_ID", "admin")
    code, out, err = flrepo("transformations", "adopt", "application.tests.categorical_transformation", "--yes")
    assert code == OK and json.loads(out)["class"] == "_io.BytesIO", err
    with RepositoryClient(live_server.url, keyring=TRUSTED) as repo:
        assert repo.load_transformation("application.tests.categorical_transformation") is io.BytesIO
        assert repo.get_transformation("application.tests.categorical_transformation").outputs == ["np.ndarray"]
