"""Signed artifacts: strategies and transformations are code (pickles), so clients load only what a
trusted publisher signed.

A signature is HMAC-SHA256, under a publisher key, of the artifact's kind, name, sha256 and size;
it travels in the item's metadata (`signature`, `key_id`, `sha256`, `size`). Keys rotate by id:
FLREPO_SIGNING_KEY / FLREPO_SIGNING_KEY_ID sign (and verify), FLREPO_VERIFY_KEYS adds more keys
that verify only, as `id:key,id2:key2`. The server never sees a key and never unpickles.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class SignatureError(Exception):
    """The artifact is unsigned, signed by an unknown key, or does not match its signature."""


class NoSigningKey(SignatureError):
    """Signing was asked for but no publisher key is configured (a setup problem, not a bad file)."""


@dataclass(frozen=True)
class Keyring:
    signing_id: str | None
    keys: dict[str, bytes]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Keyring:
        env = dict(os.environ if env is None else env)
        keys: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in env.get("FLREPO_VERIFY_KEYS", "").split(","))):
            key_id, sep, secret = item.partition(":")
            if not sep or not key_id or not secret:
                raise ValueError("FLREPO_VERIFY_KEYS must look like id:key,id2:key2")
            keys[key_id] = secret.encode()
        signing_id = None
        if env.get("FLREPO_SIGNING_KEY"):
            signing_id = env.get("FLREPO_SIGNING_KEY_ID", "default")
            keys[signing_id] = env["FLREPO_SIGNING_KEY"].encode()
        return cls(signing_id, keys)

    def require_signing(self, why: str = "signing") -> str:
        """The signing key id, or NoSigningKey saying what needed it."""
        if self.signing_id is None:
            raise NoSigningKey(f"{why}: no signing key: set FLREPO_SIGNING_KEY (and FLREPO_SIGNING_KEY_ID)")
        return self.signing_id


def _payload(kind: str, name: str, sha256: str, size: int) -> bytes:
    return f"flrepo-artifact-v1\n{kind}\n{name}\n{sha256}\n{size}".encode()


def sign(keyring: Keyring, kind: str, name: str, data: bytes) -> dict[str, Any]:
    """The metadata fields that sign `data` as the `kind` artifact called `name`."""
    return sign_digest(keyring, kind, name, hashlib.sha256(data).hexdigest(), len(data))


def sign_digest(keyring: Keyring, kind: str, name: str, sha256: str, size: int) -> dict[str, Any]:
    """The same, from a digest computed while streaming (files too large to hold in memory)."""
    key_id = keyring.require_signing()
    mac = hmac.new(keyring.keys[key_id], _payload(kind, name, sha256, size), hashlib.sha256)
    return {"signature": mac.hexdigest(), "key_id": key_id, "sha256": sha256, "size": size}


def verify(keyring: Keyring, kind: str, name: str, data: bytes, meta: dict[str, Any], allow_unsigned: bool) -> None:
    """Raise SignatureError unless `data` is exactly what a known key signed for this item."""
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
    key = keyring.keys.get(str(meta.get("key_id")))
    if key is None:
        raise SignatureError(f"{kind} {name!r} is signed with unknown key id {meta.get('key_id')!r}")
    if meta.get("size") != size or meta.get("sha256") != sha:
        raise SignatureError(f"{kind} {name!r}: the downloaded file does not match its signed size and sha256")
    expected = hmac.new(key, _payload(kind, name, sha, size), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(meta["signature"])):
        raise SignatureError(f"{kind} {name!r}: bad signature for key id {meta['key_id']!r}")
