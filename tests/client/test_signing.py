"""Ed25519 signatures of stored code: good, missing, tampered, wrong key, rotation, verifiers that
cannot sign, legacy HMAC signatures only behind the migration flag."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flrepo.signing import (
    Keyring,
    NoSigningKey,
    SignatureError,
    encode_key,
    new_key_pair,
    private_key_pem,
    public_key_of,
    sign,
    verify,
)

PRIVATE = bytes(range(32))
PUBLIC = public_key_of(PRIVATE)
KEYS = Keyring.signer("k1", PRIVATE)
VERIFIER = Keyring.verifier({"k1": PUBLIC})


def test_good_signature_verifies_with_the_public_key_alone():
    data = b"pickled bytes"
    meta = sign(KEYS, "strategy", "fedavg", data)
    assert meta["algorithm"] == "ed25519" and meta["key_id"] == "k1" and len(base64.b64decode(meta["signature"])) == 64
    verify(VERIFIER, "strategy", "fedavg", data, meta, allow_unsigned=False)


@pytest.mark.parametrize(
    "case",
    ["missing", "tampered", "wrong_key", "untrusted_key_id", "other_item", "other_kind", "forged_signature"],
)
def test_bad_signatures_are_refused(case):
    data = b"pickled bytes"
    meta = sign(KEYS, "strategy", "fedavg", data)
    kind, name = "strategy", "fedavg"
    keyring = VERIFIER
    if case == "missing":
        meta = {}
    elif case == "tampered":
        data = b"pickled bytez"
    elif case == "wrong_key":
        keyring = Keyring.verifier({"k1": new_key_pair()[1]})
    elif case == "untrusted_key_id":
        keyring = Keyring.verifier({"k2": PUBLIC})
    elif case == "other_item":
        name = "fedprox"  # a signature cannot be replayed onto another item
    elif case == "other_kind":
        kind = "transformation"
    elif case == "forged_signature":
        meta = {**meta, "signature": base64.b64encode(b"\0" * 64).decode()}
    with pytest.raises(SignatureError):
        verify(keyring, kind, name, data, meta, allow_unsigned=False)


def test_a_verifier_cannot_sign():
    """The reproduction: with HMAC, a verify-only key could sign a forged payload that then ran.
    A verifier holds public keys only: it has nothing to sign with, and a signature made with any
    other key does not verify."""
    with pytest.raises(NoSigningKey):
        sign(VERIFIER, "strategy", "fedavg", b"evil payload")
    forger = Keyring.signer("k1", new_key_pair()[0])  # claims the publisher's key id
    forged = sign(forger, "strategy", "fedavg", b"evil payload")
    with pytest.raises(SignatureError, match="bad signature"):
        verify(VERIFIER, "strategy", "fedavg", b"evil payload", forged, allow_unsigned=False)
    # Even the publisher's public key, used as an HMAC secret (what a verifier held before), forges nothing.
    legacy = {"signature": hmac.new(PUBLIC, b"x", hashlib.sha256).hexdigest(), "key_id": "k1"}
    meta = {**legacy, "sha256": hashlib.sha256(b"evil payload").hexdigest(), "size": 12}
    with pytest.raises(SignatureError, match="legacy HMAC"):
        verify(VERIFIER, "strategy", "fedavg", b"evil payload", meta, allow_unsigned=False)


def test_allow_unsigned_is_the_only_way_around_and_warns(caplog):
    verify(VERIFIER, "strategy", "x", b"data", {}, allow_unsigned=True)
    assert "WITHOUT checking its signature" in caplog.text


def _hmac_meta(secret: bytes, key_id: str, data: bytes, kind: str = "strategy", name: str = "s") -> dict:
    sha = hashlib.sha256(data).hexdigest()
    payload = f"flrepo-artifact-v1\n{kind}\n{name}\n{sha}\n{len(data)}".encode()
    return {
        "signature": hmac.new(secret, payload, hashlib.sha256).hexdigest(),
        "key_id": key_id,
        "sha256": sha,
        "size": len(data),
    }


def test_legacy_hmac_loads_only_with_the_migration_flag(caplog):
    meta = _hmac_meta(b"old-secret", "old", b"d")
    ring = Keyring.from_env({"FLREPO_LEGACY_HMAC_KEYS": "old:old-secret"})
    with pytest.raises(SignatureError, match="FLREPO_ALLOW_LEGACY_HMAC"):
        verify(ring, "strategy", "s", b"d", meta, allow_unsigned=False)
    flagged = Keyring.from_env({"FLREPO_LEGACY_HMAC_KEYS": "old:old-secret", "FLREPO_ALLOW_LEGACY_HMAC": "true"})
    verify(flagged, "strategy", "s", b"d", meta, allow_unsigned=False)
    assert "LEGACY HMAC" in caplog.text
    assert ring.allowing_legacy_hmac().allow_legacy_hmac
    with pytest.raises(SignatureError, match="bad HMAC"):
        verify(flagged, "strategy", "s", b"x", _hmac_meta(b"wrong", "old", b"x"), allow_unsigned=False)


def test_keys_and_rotation_from_environment(tmp_path: Path):
    old_private, old_public = new_key_pair()
    new_private, new_public = new_key_pair()
    old = sign(Keyring.signer("old", old_private), "strategy", "s", b"d")
    key_file = tmp_path / "new.key"
    key_file.write_bytes(private_key_pem(new_private))
    trusted = tmp_path / "trusted.pub"
    trusted.write_text(f"# old publisher\nold:{encode_key(old_public)}\n")
    ring = Keyring.from_env({"FLREPO_SIGNING_KEY_FILE": str(key_file), "FLREPO_TRUSTED_KEYS_FILE": str(trusted)})
    assert ring.signing_id == "new"  # the key file's name
    verify(ring, "strategy", "s", b"d", old, allow_unsigned=False)  # old signatures verify while old is trusted
    fresh = sign(ring, "strategy", "s", b"d")
    assert fresh["key_id"] == "new"
    verify(Keyring.verifier({"new": new_public}), "strategy", "s", b"d", fresh, allow_unsigned=False)
    # Dropping the old public key revokes what it signed.
    with pytest.raises(SignatureError, match="not trusted"):
        verify(Keyring.verifier({"new": new_public}), "strategy", "s", b"d", old, allow_unsigned=False)
    # The key itself in FLREPO_SIGNING_KEY: base64 of its 32 bytes, or the PEM on one line.
    for text in (encode_key(new_private), private_key_pem(new_private).decode().replace("\n", " ")):
        inline = Keyring.from_env({"FLREPO_SIGNING_KEY": text, "FLREPO_SIGNING_KEY_ID": "n"})
        assert inline.can_sign and sign(inline, "strategy", "s", b"d")["key_id"] == "n"
    inline_trust = Keyring.from_env({"FLREPO_TRUSTED_KEYS": f"old:{encode_key(old_public)}"})
    verify(inline_trust, "strategy", "s", b"d", old, allow_unsigned=False)


def test_misconfigured_keys_say_what_is_wrong():
    with pytest.raises(ValueError, match="FLREPO_TRUSTED_KEYS"):
        Keyring.from_env({"FLREPO_TRUSTED_KEYS": "no-colon"})
    with pytest.raises(ValueError, match="FLREPO_TRUSTED_KEYS"):
        Keyring.from_env({"FLREPO_TRUSTED_KEYS": "k:c2hvcnQ="})  # not 32 bytes
    with pytest.raises(NoSigningKey, match="no signing key"):
        sign(Keyring.from_env({}), "strategy", "s", b"d")
    # An old HMAC secret as FLREPO_SIGNING_KEY: the keyring still loads (reads work), signing explains.
    old_style = Keyring.from_env({"FLREPO_SIGNING_KEY": "publisher-secret"})
    assert old_style.wants_to_sign and not old_style.can_sign
    with pytest.raises(NoSigningKey, match="signing-create"):
        sign(old_style, "strategy", "s", b"d")


def test_signing_create_writes_a_key_pair_that_works(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "flrepo.cli", "keys", "signing-create", "--id", "ops", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    private, public = tmp_path / "ops.key", tmp_path / "ops.pub"
    assert os.stat(private).st_mode & 0o777 == 0o600
    entry = public.read_text().strip()
    assert f"FLREPO_TRUSTED_KEYS={entry}" in done.stdout and "BEGIN" not in done.stdout  # the private key is not shown
    signer = Keyring.from_env({"FLREPO_SIGNING_KEY_FILE": str(private)})
    verify(
        Keyring.from_env({"FLREPO_TRUSTED_KEYS": entry}),
        "strategy",
        "s",
        b"d",
        sign(signer, "strategy", "s", b"d"),
        allow_unsigned=False,
    )
    again = subprocess.run(
        [sys.executable, "-m", "flrepo.cli", "keys", "signing-create", "--id", "ops", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and "not overwriting" in again.stderr
