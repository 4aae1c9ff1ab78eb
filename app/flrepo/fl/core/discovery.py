"""How a site finds its task's collector: the one place a local execution learns the server
address, the runtime and the CA to trust (the collector publishes them in the task's status:
flrepo.fl.core.lifecycle.started), and the one home of the discovery record's signature.

The record (runtime, address, CA) is signed by the collector with an Ed25519 key (flrepo.signing). A
local execution that finds its collector through the task connects only after the signature verifies:
with the key the task pins (`discovery_key`, `id:base64`) when it pins one, else with any key it trusts
(FLREPO_TRUSTED_KEYS). Without that, a writer key that could set the address and the CA would draw the
sites' trained weights to its own server; TLS alone does not help when the CA comes through the same
channel. `--server` (with `--ca`, or plaintext) given by hand needs no signature.

The collector's key: FLREPO_COLLECTOR_KEY_FILE (what `flrepo keys signing-create` writes) or
FLREPO_COLLECTOR_KEY, with FLREPO_COLLECTOR_KEY_ID (default: the file's name, else "collector"); else
the publisher's signing key if the collector holds one. Prefer a key of its own, pinned by the tasks
(`discovery_key`): a collector key in FLREPO_TRUSTED_KEYS would also verify strategies it signed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flrepo.client import RepositoryClient
from flrepo.fl.core.watch import Ended, ended_of
from flrepo.signing import Keyring, SignatureError, sign, verify

log = logging.getLogger(__name__)

# How long a local execution waits, by default, for a collector to publish where to connect.
DISCOVERY_SECONDS = 600.0


class DiscoveryTimeout(RuntimeError):
    """No collector published an address for the task in time."""


@dataclass(frozen=True)
class Connection:
    """Where and how to reach the task's collector."""

    runtime: str  # legacy | message
    address: str
    ca: bytes | None  # PEM certificates to trust; None: plaintext


@dataclass(frozen=True)
class Site:
    """How this site connects, beyond the address: its own CA override, its SuperNode key."""

    server: str | None = None  # overrides the published address (e.g. behind a tunnel)
    root_certificates: bytes | None = None  # overrides the published CA
    key: Path | None = None  # Message-API runtime: the SuperNode's private key (OpenSSH ECDSA)
    insecure: bool = False  # Message-API runtime: plaintext, when the collector runs --insecure
    wait: float = DISCOVERY_SECONDS


def discover(repo: RepositoryClient, task_id: str, site: Site, poll: float = 1.0) -> Connection | Ended:
    """Wait until the task's collector has published its address (or the task has ended); what the site
    takes from the task (address, CA) must be signed as the task requires (SignatureError otherwise)."""
    deadline = time.monotonic() + site.wait
    while True:
        task = repo.get_task(task_id)
        end = ended_of(task)
        if end is not None:
            return end
        if task.phase == "Running" and task.server_address and task.runtime:
            if site.server is None or (site.root_certificates is None and task.server_ca):
                verify_record(task.model_dump(), repo.keyring)  # SignatureError: never connect to it
            ca = site.root_certificates or (task.server_ca.encode() if task.server_ca else None)
            return Connection(task.runtime, site.server or task.server_address, ca)
        if time.monotonic() > deadline:
            raise DiscoveryTimeout(
                f"task {task_id}: no training collector published its address within {site.wait:g} s "
                f"(the task is {task.phase})"
            )
        time.sleep(poll)


# --- the signed record ---------------------------------------------------------------------

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
