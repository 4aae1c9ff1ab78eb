"""How a site finds its task's collector: the one place a local execution learns the server
address, the runtime and the CA to trust (the collector publishes them in the task's status:
flrepo.fl.core.lifecycle.started)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from flrepo.client import RepositoryClient
from flrepo.fl.core.watch import Ended, ended_of

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
    """Wait until the task's collector has published its address (or the task has ended)."""
    deadline = time.monotonic() + site.wait
    while True:
        task = repo.get_task(task_id)
        end = ended_of(task)
        if end is not None:
            return end
        if task.phase == "Running" and task.server_address and task.runtime:
            ca = site.root_certificates or (task.server_ca.encode() if task.server_ca else None)
            return Connection(task.runtime, site.server or task.server_address, ca)
        if time.monotonic() > deadline:
            raise DiscoveryTimeout(
                f"task {task_id}: no training collector published its address within {site.wait:g} s "
                f"(the task is {task.phase})"
            )
        time.sleep(poll)
