"""TLS material of a collector: the CA, its server certificate and key, from three files or from a
mounted Kubernetes TLS Secret (a directory holding ca.crt, tls.crt and tls.key, the layout of
`kubectl create secret generic ... --from-file` and of cert-manager)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SECRET_FILES = ("ca.crt", "tls.crt", "tls.key")


class TlsError(ValueError):
    """Certificates that are missing, incomplete or not what they claim to be."""


@dataclass(frozen=True)
class ServerTls:
    ca: Path
    cert: Path
    key: Path

    def certificates(self) -> tuple[bytes, bytes, bytes]:
        """(CA, certificate, private key): what Flower's servers take."""
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()

    @property
    def ca_pem(self) -> str:
        """The CA certificate(s) participants must trust, published in the task's status."""
        return self.ca.read_text()


def server_tls(
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    directory: str | Path | None = None,
) -> ServerTls | None:
    """The collector's TLS files, checked; None when none are given (TlsError when some are)."""
    if directory:
        folder = Path(directory)
        ca, cert, key = (folder / name for name in SECRET_FILES)
    given = [p for p in (ca, cert, key) if p]
    if not given:
        return None
    if len(given) < 3:
        raise TlsError("TLS needs all three of the CA certificate, the server certificate and its private key")
    paths = ServerTls(Path(ca), Path(cert), Path(key))  # type: ignore[arg-type]
    for path in (paths.ca, paths.cert, paths.key):
        if not path.is_file():
            raise TlsError(f"{path}: no such file")
    if b"-----BEGIN CERTIFICATE-----" not in paths.ca.read_bytes():
        raise TlsError(f"{paths.ca}: not a PEM certificate")
    if b"-----BEGIN CERTIFICATE-----" not in paths.cert.read_bytes():
        raise TlsError(f"{paths.cert}: not a PEM certificate")
    if b"PRIVATE KEY-----" not in paths.key.read_bytes():
        raise TlsError(f"{paths.key}: not a PEM private key")
    return paths
