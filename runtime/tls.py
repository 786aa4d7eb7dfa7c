"""A development certificate authority and the certificates compose's stack uses (secrets/tls/, never in an
image): Temporal's frontend (mTLS), the clients that reach it (worker, web app, migrate, the CLI) and the web
app's HTTPS. A province's own CA replaces all of it: the settings only name files.

Each key is written 0600. The CA's key is written beside its certificate so that more client certificates
can be made later; keep it off the servers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.keyfiles import write_secret

VALID_DAYS = 825


@dataclass(frozen=True)
class Leaf:
    name: str  # file stem: <name>.pem, <name>.key
    names: tuple[str, ...]  # DNS names and IP addresses the certificate is for
    server: bool
    client: bool


# Temporal's frontend is both (its services reach each other through it); the clients are clients only,
# one pair per reader, since compose bind-mounts each secret with one owner.
LEAVES = (
    Leaf("temporal", ("temporal", "localhost", "127.0.0.1"), server=True, client=True),
    Leaf("client", ("housing-worker",), server=False, client=True),
    Leaf("tools", ("temporal-tools",), server=False, client=True),  # admin tools and the Web UI (uid 1000)
    Leaf("web", ("localhost", "web", "127.0.0.1"), server=True, client=False),
)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_secret(path, pem.decode())


def _alt_names(names: tuple[str, ...]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def make_dev_ca(folder: Path, *, leaves: tuple[Leaf, ...] = LEAVES, ca_name: str = "Housing dev CA") -> list[Path]:
    """Write ca.pem/ca.key and each leaf's .pem/.key into `folder`. Refuses a folder that already holds a CA
    (a second CA would silently stop every certificate issued by the first from being trusted)."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "ca.pem").exists():
        raise FileExistsError(f"{folder.name}/ca.pem exists: remove the folder to make a new CA")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    written = [folder / "ca.pem", folder / "ca.key"]
    written[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(written[1], ca_key)
    for leaf in leaves:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [
            u
            for u, on in (
                (ExtendedKeyUsageOID.SERVER_AUTH, leaf.server),
                (ExtendedKeyUsageOID.CLIENT_AUTH, leaf.client),
            )
            if on
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf.names[0])]))
            .issuer_name(ca_subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_alt_names(leaf.names)), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem, pkey = folder / f"{leaf.name}.pem", folder / f"{leaf.name}.key"
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pkey, key)
        written += [pem, pkey]
    return written
