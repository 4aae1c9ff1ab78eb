"""The discovery record participants trust: where the collector serves (runtime, address) and the CA
its TLS certificate chains to, signed by the collector with an Ed25519 key (flrepo.signing).

A local execution that finds its collector through the task (no `--server`) connects only after the
record's signature verifies: with the key the task pins (`discovery_key`, `id:base64`) when it pins
one, else with any key it trusts (FLREPO_TRUSTED_KEYS). Without that, a writer key that could set the
address and the CA would draw the sites' trained weights to its own server; TLS alone does not help
when the CA comes through the same channel.

The collector's key: FLREPO_COLLECTOR_KEY_FILE (what `flrepo keys signing-create` writes) or
FLREPO_COLLECTOR_KEY, with FLREPO_COLLECTOR_KEY_ID (default: the file's name, else "collector"); else
the publisher's signing key if the collector holds one. Prefer a key of its own, pinned by the tasks
(`discovery_key`): a collector key in FLREPO_TRUSTED_KEYS would also verify strategies it signed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from flrepo.signing import Keyring, SignatureError, sign, verify

log = logging.getLogger(__name__)

KIND = "discovery"


def record_bytes(task_id: str, runtime: str | None, address: str | None, ca: str | None) -> bytes:
    """The canonical bytes a collector signs: the task, the runtime, the address and the CA."""
    fields = {"task_id": task_id, "runtime": runtime, "server_address": address, "server_ca": ca}
    return b"flrepo-discovery-v1\n" + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def collector_keyring(env: dict[str, str] | None = None, fallback: Keyring | None = None) -> Keyring | None:
    """The collector's signing keyring (see the module docstring); None when it has no key."""
    env = dict(os.environ if env is None else env)
    path, text = env.get("FLREPO_COLLECTOR_KEY_FILE"), env.get("FLREPO_COLLECTOR_KEY")
    if path or text:
        key_id = env.get("FLREPO_COLLECTOR_KEY_ID") or (Path(path).stem if path else "collector")
        mapped = {"FLREPO_SIGNING_KEY_ID": key_id}
        if path:
            mapped["FLREPO_SIGNING_KEY_FILE"] = path
        else:
            mapped["FLREPO_SIGNING_KEY"] = str(text)
        keyring = Keyring.from_env(mapped)
        keyring.require_signing("the collector's discovery key")  # a broken key is an error, not "no key"
        return keyring
    if fallback is not None and fallback.can_sign:
        return fallback
    return None


def signed_fields(keyring: Keyring | None, task_id: str, runtime: str, address: str, ca: str | None) -> dict[str, Any]:
    """The status fields that advertise where participants connect, signed when the collector has a key."""
    fields: dict[str, Any] = {"runtime": runtime, "server_address": address}
    if ca is not None:
        fields["server_ca"] = ca
    if keyring is None:
        log.warning(
            "task %s: no collector key (FLREPO_COLLECTOR_KEY_FILE): the discovery record is unsigned and local "
            "executions that find this collector through the task will refuse it (give them --server/--ca)",
            task_id,
        )
        return fields
    fields["discovery_signature"] = sign(keyring, KIND, task_id, record_bytes(task_id, runtime, address, ca))
    return fields


def _pinned_keyring(task: dict[str, Any]) -> Keyring | None:
    pinned = task.get("discovery_key")
    if not pinned:
        return None
    key_id, _, encoded = str(pinned).partition(":")
    return Keyring.from_env({"FLREPO_TRUSTED_KEYS": f"{key_id}:{encoded}"}) if key_id and encoded else None


def verify_record(task: dict[str, Any], trusted: Keyring) -> None:
    """SignatureError unless the task's discovery record is signed as the task requires: by its pinned
    `discovery_key`, else by a key in `trusted`."""
    task_id = str(task.get("task_id"))
    signature = task.get("discovery_signature")
    if not signature:
        raise SignatureError(
            f"task {task_id!r}: the collector's address and CA are not signed; refusing to connect "
            "(give --server and --ca by hand, or run the collector with FLREPO_COLLECTOR_KEY_FILE)"
        )
    keyring = _pinned_keyring(task) or trusted
    data = record_bytes(task_id, task.get("runtime"), task.get("server_address"), task.get("server_ca"))
    try:
        verify(keyring, KIND, task_id, data, dict(signature), allow_unsigned=False)
    except SignatureError as exc:
        how = "the task's discovery_key" if task.get("discovery_key") else "FLREPO_TRUSTED_KEYS"
        raise SignatureError(f"task {task_id!r}: the discovery record does not verify with {how}: {exc}") from None
