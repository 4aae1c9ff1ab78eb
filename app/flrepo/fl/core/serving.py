"""How a collector serves its participants, whichever Flower runtime it runs."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from flrepo.fl.tls import ServerTls


@dataclass(frozen=True)
class Serving:
    """How the collector serves its participants."""

    address: str = "0.0.0.0:8080"  # where Flower listens (HOST:PORT)
    advertise: str | None = None  # what participants are told, when it differs (a Kubernetes Service)
    tls: ServerTls | None = None
    insecure: bool = False  # Message-API runtime: plaintext only when asked for explicitly


def advertised(serving: Serving, bound: str) -> str:
    """The address participants are given: --advertise, else the bound one with a wildcard host
    replaced by this host's name."""
    if serving.advertise:
        return serving.advertise
    host, _, port = bound.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"
