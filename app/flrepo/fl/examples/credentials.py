"""Throw-away credentials for the demo, the benchmarks and the tests: a CA with a server certificate
laid out as a mounted Kubernetes TLS Secret, and SuperNode key pairs. Made per run, never committed
and never meant for a deployment (docs/DEPLOY.md says where real ones come from)."""

from __future__ import annotations

from pathlib import Path


def throwaway_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Path:
    """A throw-away CA and a server certificate for `hosts`, laid out as a mounted Kubernetes TLS
    Secret (ca.crt, tls.crt, tls.key) in `directory`; that directory."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flrepo throw-away CA")])

    def build(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca = build(ca_name, ca_key).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]), server_key).add_extension(
        x509.SubjectAlternativeName(names), critical=False
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca.sign(ca_key, hashes.SHA256()).public_bytes(pem))
    (directory / "tls.crt").write_bytes(server.sign(ca_key, hashes.SHA256()).public_bytes(pem))
    key_bytes = server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (directory / "tls.key").write_bytes(key_bytes)
    return directory


def participant_key(path: Path) -> str:
    """A SuperNode key pair: the private key (OpenSSH ECDSA P-256) at `path`; returns the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} {path.stem}"
