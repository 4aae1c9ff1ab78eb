"""Signed artifacts: strategies and transformations are code (pickles), so clients load only what a
trusted publisher signed.

Signatures are Ed25519 (the `cryptography` package): a publisher holds a private key and signs; training
collectors and local executions hold only public keys, so a verifier cannot sign anything. The signed
payload is the artifact's kind, name, sha256 and size; the signature travels in the item's metadata
(`signature`, `key_id`, `algorithm`, `sha256`, `size`). The server never sees a key and never unpickles.

Keys (environment of the SDK, the CLI and the FL processes):

- FLREPO_SIGNING_KEY_FILE (what `flrepo keys signing-create` writes) or FLREPO_SIGNING_KEY (the private
  key itself: PEM, or base64 of its 32 bytes), with FLREPO_SIGNING_KEY_ID (default: the key file's name,
  else "default"): the publisher's key. Its public half is trusted as well.
- FLREPO_TRUSTED_KEYS=`id:base64,id2:base64` and/or FLREPO_TRUSTED_KEYS_FILE (lines `id:base64`, as in
  the `.pub` files signing-create writes): the public keys that verify. Rotation: sign with a new id and
  keep the old public key trusted until everything is re-signed; dropping it revokes its signatures.
- Items signed before the switch carry HMAC-SHA256 signatures (no `algorithm`). They load only with the
  migration flag FLREPO_ALLOW_LEGACY_HMAC=true and their old secret in FLREPO_LEGACY_HMAC_KEYS=`id:secret`,
  with a warning each time; `flrepo seed` re-signs the catalogue.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ED25519 = "ed25519"
LEGACY_HMAC = "hmac-sha256"
TRUE = {"1", "true", "yes", "on"}
INSTALL_HINT = "pip install 'flrepo[signing]' (or flrepo[fl])"


class SignatureError(Exception):
    """The artifact is unsigned, signed by an unknown key, or does not match its signature."""


class PinMismatch(SignatureError):
    """The artifact is not the version a task pinned (its sha256 differs), however it is signed."""


class NoSigningKey(SignatureError):
    """Signing was asked for but no usable publisher key is configured (a setup problem, not a bad file)."""


def _crypto() -> Any:
    """The Ed25519 classes; NoSigningKey naming the extra when `cryptography` is not installed."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # the core install (SDK + CLI) does not carry it
        raise NoSigningKey(f"Ed25519 signatures need the cryptography package: {INSTALL_HINT}") from None
    return ed25519


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _private_bytes(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 private key given as PEM (PKCS#8) or base64; ValueError otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        ed25519 = _crypto()
        from cryptography.hazmat.primitives import serialization

        # The PEM body alone, so the key may also be given on one line (an .env file): `tr '\n' ' ' < ID.key`.
        body = text.split("-----", 2)[-1].split("-----END", 1)[0]
        der = _b64("".join(body.replace("\\n", "\n").split()))
        key = serialization.load_der_private_key(der, password=None) if der else None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("the PEM key is not an Ed25519 private key")
        return key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    raw = _b64(text)
    if len(raw) != 32:
        raise ValueError(
            "not an Ed25519 private key (PEM, or base64 of 32 bytes); HMAC secrets are no longer used: "
            "make a key pair with `flrepo keys signing-create`"
        )
    return raw


def _public_entries(text: str, source: str) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in text.replace("\n", ",").split(","))):
        if item.startswith("#"):
            continue
        key_id, sep, encoded = item.partition(":")
        raw = _b64(encoded)
        if not sep or not key_id.strip() or len(raw) != 32:
            raise ValueError(f"{source} must look like id:<base64 of a 32-byte Ed25519 public key>,id2:...")
        keys[key_id.strip()] = raw
    return keys


def public_key_of(private: bytes) -> bytes:
    """The raw public key of a raw Ed25519 private key."""
    from cryptography.hazmat.primitives import serialization

    key = _crypto().Ed25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def new_key_pair() -> tuple[bytes, bytes]:
    """(private, public) raw bytes of a fresh Ed25519 key pair."""
    from cryptography.hazmat.primitives import serialization

    private = _crypto().Ed25519PrivateKey.generate()
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return raw, public_key_of(raw)


def private_key_pem(private: bytes) -> bytes:
    """A raw Ed25519 private key as PKCS#8 PEM (what `flrepo keys signing-create` writes)."""
    from cryptography.hazmat.primitives import serialization

    key = _crypto().Ed25519PrivateKey.from_private_bytes(private)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Keyring:
    """The keys one process signs and verifies with (see the module docstring)."""

    signing_id: str | None = None
    signing_key: bytes | None = field(default=None, repr=False)
    trusted: dict[str, bytes] = field(default_factory=dict)
    legacy_hmac: dict[str, bytes] = field(default_factory=dict, repr=False)
    allow_legacy_hmac: bool = False
    # Why a configured signing key cannot be used (reported when signing is asked for, not before).
    signing_problem: str | None = None

    @classmethod
    def signer(cls, key_id: str, private: bytes, trusted: dict[str, bytes] | None = None) -> Keyring:
        """A keyring that signs with `private` (raw bytes) as `key_id`, trusting its public half and `trusted`."""
        return cls(key_id, private, {**(trusted or {}), key_id: public_key_of(private)})

    @classmethod
    def verifier(cls, trusted: dict[str, bytes]) -> Keyring:
        """A keyring that only verifies, with these public keys."""
        return cls(None, None, dict(trusted))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Keyring:
        env = dict(os.environ if env is None else env)
        trusted = _public_entries(env.get("FLREPO_TRUSTED_KEYS", ""), "FLREPO_TRUSTED_KEYS")
        if env.get("FLREPO_TRUSTED_KEYS_FILE"):
            path = Path(env["FLREPO_TRUSTED_KEYS_FILE"])
            trusted.update(_public_entries(path.read_text(), str(path)))
        legacy: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in env.get("FLREPO_LEGACY_HMAC_KEYS", "").split(","))):
            key_id, sep, secret = item.partition(":")
            if not sep or not key_id or not secret:
                raise ValueError("FLREPO_LEGACY_HMAC_KEYS must look like id:secret,id2:secret2")
            legacy[key_id] = secret.encode()
        if env.get("FLREPO_VERIFY_KEYS"):
            log.warning(
                "FLREPO_VERIFY_KEYS (HMAC secrets) is no longer read: trust publishers' public keys with "
                "FLREPO_TRUSTED_KEYS; old HMAC secrets, for migration only, go in FLREPO_LEGACY_HMAC_KEYS"
            )
        allow_legacy = env.get("FLREPO_ALLOW_LEGACY_HMAC", "").strip().lower() in TRUE
        signing_id, signing_key, problem = _signing_key(env)
        if signing_key is not None and signing_id is not None:
            trusted.setdefault(signing_id, public_key_of(signing_key))
        return cls(signing_id, signing_key, trusted, legacy, allow_legacy, problem)

    @property
    def can_sign(self) -> bool:
        return self.signing_key is not None and self.signing_id is not None

    @property
    def wants_to_sign(self) -> bool:
        """A signing key is configured (usable or not): uploads are meant to be signed."""
        return self.can_sign or self.signing_problem is not None

    def require_signing(self, why: str = "signing") -> str:
        """The signing key id, or NoSigningKey saying what needed it."""
        if self.signing_problem:
            raise NoSigningKey(f"{why}: {self.signing_problem}")
        if self.signing_id is None or self.signing_key is None:
            raise NoSigningKey(
                f"{why}: no signing key: set FLREPO_SIGNING_KEY_FILE (made by `flrepo keys signing-create`) "
                "or FLREPO_SIGNING_KEY, and FLREPO_SIGNING_KEY_ID"
            )
        return self.signing_id

    def allowing_legacy_hmac(self) -> Keyring:
        """The same keys with the HMAC migration flag set (the CLI's --allow-legacy-hmac)."""
        return Keyring(self.signing_id, self.signing_key, self.trusted, self.legacy_hmac, True, self.signing_problem)


def _signing_key(env: dict[str, str]) -> tuple[str | None, bytes | None, str | None]:
    """(key id, raw private key, problem) from FLREPO_SIGNING_KEY_FILE / FLREPO_SIGNING_KEY."""
    path = env.get("FLREPO_SIGNING_KEY_FILE")
    text = env.get("FLREPO_SIGNING_KEY")
    if not path and not text:
        return None, None, None
    key_id = env.get("FLREPO_SIGNING_KEY_ID") or (Path(path).stem if path else "default")
    source = f"FLREPO_SIGNING_KEY_FILE={path}" if path else "FLREPO_SIGNING_KEY"
    try:
        raw = _private_bytes(Path(path).read_text() if path else str(text))
    except NoSigningKey as exc:
        return key_id, None, str(exc)
    except (OSError, ValueError) as exc:
        return key_id, None, f"{source}: {exc}"
    try:
        _crypto()
    except NoSigningKey as exc:
        return key_id, None, str(exc)
    return key_id, raw, None


def _payload(kind: str, name: str, sha256: str, size: int) -> bytes:
    return f"flrepo-artifact-v2\n{kind}\n{name}\n{sha256}\n{size}".encode()


def _legacy_payload(kind: str, name: str, sha256: str, size: int) -> bytes:
    return f"flrepo-artifact-v1\n{kind}\n{name}\n{sha256}\n{size}".encode()


def sign(keyring: Keyring, kind: str, name: str, data: bytes) -> dict[str, Any]:
    """The metadata fields that sign `data` as the `kind` artifact called `name`."""
    return sign_digest(keyring, kind, name, hashlib.sha256(data).hexdigest(), len(data))


def sign_digest(keyring: Keyring, kind: str, name: str, sha256: str, size: int) -> dict[str, Any]:
    """The same, from a digest computed while streaming (files too large to hold in memory)."""
    key_id = keyring.require_signing()
    assert keyring.signing_key is not None
    private = _crypto().Ed25519PrivateKey.from_private_bytes(keyring.signing_key)
    signature = private.sign(_payload(kind, name, sha256, size))
    return {"signature": encode_key(signature), "key_id": key_id, "algorithm": ED25519, "sha256": sha256, "size": size}


def verify(keyring: Keyring, kind: str, name: str, data: bytes, meta: dict[str, Any], allow_unsigned: bool) -> None:
    """Raise SignatureError unless `data` is exactly what a trusted key signed for this item."""
    verify_digest(keyring, kind, name, hashlib.sha256(data).hexdigest(), len(data), meta, allow_unsigned)


def verify_digest(
    keyring: Keyring, kind: str, name: str, sha: str, size: int, meta: dict[str, Any], allow_unsigned: bool
) -> None:
    """The same, from the sha256 and size of a file that was streamed to disk."""
    if allow_unsigned:
        log.warning("loading %s %r WITHOUT checking its signature (allow_unsigned)", kind, name)
        return
    if not meta.get("signature"):
        raise SignatureError(f"{kind} {name!r} is not signed; refusing to load it")
    if meta.get("size") != size or meta.get("sha256") != sha:
        raise SignatureError(f"{kind} {name!r}: the downloaded file does not match its signed size and sha256")
    algorithm = meta.get("algorithm") or LEGACY_HMAC  # signatures made before Ed25519 name none
    key_id = str(meta.get("key_id"))
    if algorithm == ED25519:
        _verify_ed25519(keyring, kind, name, sha, size, key_id, str(meta["signature"]))
    elif algorithm == LEGACY_HMAC:
        _verify_legacy(keyring, kind, name, sha, size, key_id, str(meta["signature"]))
    else:
        raise SignatureError(f"{kind} {name!r} is signed with unknown algorithm {algorithm!r}")


def _verify_ed25519(keyring: Keyring, kind: str, name: str, sha: str, size: int, key_id: str, signature: str) -> None:
    public = keyring.trusted.get(key_id)
    if public is None:
        raise SignatureError(f"{kind} {name!r} is signed with key id {key_id!r}, which is not trusted here")
    crypto = _crypto()
    from cryptography.exceptions import InvalidSignature

    try:
        crypto.Ed25519PublicKey.from_public_bytes(public).verify(_b64(signature), _payload(kind, name, sha, size))
    except (InvalidSignature, ValueError):
        raise SignatureError(f"{kind} {name!r}: bad signature for key id {key_id!r}") from None


def _verify_legacy(keyring: Keyring, kind: str, name: str, sha: str, size: int, key_id: str, signature: str) -> None:
    if not keyring.allow_legacy_hmac:
        raise SignatureError(
            f"{kind} {name!r} carries a legacy HMAC signature (key id {key_id!r}), which anyone who can verify "
            "it could have made: re-sign it (`flrepo seed` re-signs the catalogue; re-upload others with an "
            "Ed25519 key), or load it during the migration with FLREPO_ALLOW_LEGACY_HMAC=true / "
            "--allow-legacy-hmac and its secret in FLREPO_LEGACY_HMAC_KEYS"
        )
    secret = keyring.legacy_hmac.get(key_id)
    if secret is None:
        raise SignatureError(f"{kind} {name!r} is HMAC-signed with unknown key id {key_id!r} (FLREPO_LEGACY_HMAC_KEYS)")
    expected = hmac.new(secret, _legacy_payload(kind, name, sha, size), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureError(f"{kind} {name!r}: bad HMAC signature for key id {key_id!r}")
    log.warning(
        "loading %s %r on a LEGACY HMAC signature (migration flag set): re-sign it with an Ed25519 key", kind, name
    )
