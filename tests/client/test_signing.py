"""Signatures of stored code: good, missing, tampered, wrong key, rotation."""

from __future__ import annotations

import pytest

from flrepo.signing import Keyring, SignatureError, sign, verify

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
