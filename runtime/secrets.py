"""The secrets docker-compose.yml reads from `secrets/`, made once, and who may read each.

Compose without swarm bind-mounts a secret file with its host owner and mode, so each private one belongs to
the user of the one image that reads it; certificates and public halves are readable by all. The CA's key is
no one's: move it off the server once the certificates are made."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from archive.witness import KEY_PREFIX as WITNESS_KEY_PREFIX
from archive.witness import write_public_key_file
from core.codec import new_ring, write_ring
from core.keyfiles import write_secret
from models.assertion import CHANNEL, OFFICERS
from operations.signing_keys import ensure_ring, public_file_text
from runtime.tls import make_dev_ca

APP, POSTGRES, TEMPORAL = 10001, 999, 1000  # the application image's user, postgres's, Temporal's images'

# Which container user reads each private secret (tests/test_compose.py checks it against the services).
OWNERS: dict[str, int] = {
    "payload-keys": APP,
    "signing-keys": APP,
    "bank-signing-keys": APP,
    "witness-keys": APP,
    "bank-callback-secret": APP,
    "database_url": APP,
    "database_owner_url": APP,
    "tls/client.key": APP,
    "tls/web.key": APP,
    "tls/temporal.key": TEMPORAL,
    "tls/tools.key": TEMPORAL,
    "temporal-db-password": TEMPORAL,
    "app-db-superuser-password": POSTGRES,  # read as root by the postgres image's entrypoint
    "app-db-owner-password": POSTGRES,  # read by its init script, as postgres
    "app-db-app-password": POSTGRES,
}


def make_compose_secrets(folder: Path, *, chown: bool = False) -> list[str]:
    """Make every secret the compose file names that `folder` lacks; return the names made. Never replaces a
    file: a new ring would disown what the old one sealed or signed. With `chown` (as root), give each
    private secret to its reader."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    made: list[str] = []

    def secret(name: str, text: str) -> None:
        if not (folder / name).exists():
            write_secret(folder / name, text)
            made.append(name)

    if not (folder / "payload-keys").exists():
        write_ring(folder / "payload-keys", new_ring())
        made.append("payload-keys")
    for name, holder, prefix in (("signing-keys", OFFICERS, "officers-"), ("bank-signing-keys", CHANNEL, "bank-")):
        ring, created = ensure_ring(folder / name, prefix)
        if created:
            (folder / f"{name}.pub").write_text(public_file_text(ring, holder))
            made += [name, f"{name}.pub"]
    ring, created = ensure_ring(folder / "witness-keys", WITNESS_KEY_PREFIX)
    if created:
        write_public_key_file(folder / "witness-keys.pub", ring)
        made += ["witness-keys", "witness-keys.pub"]
    secret("bank-callback-secret", secrets.token_urlsafe(32))
    for name in ("temporal-db-password", "app-db-superuser-password", "app-db-owner-password", "app-db-app-password"):
        secret(name, secrets.token_urlsafe(24))
    # Read by the settings from SECRETS_DIR (one file per setting, named as the setting).
    owner_pw = (folder / "app-db-owner-password").read_text().strip()
    app_pw = (folder / "app-db-app-password").read_text().strip()
    secret("database_url", f"postgresql://housing_app:{app_pw}@app-db:5432/housing")
    secret("database_owner_url", f"postgresql://housing:{owner_pw}@app-db:5432/housing")
    if not (folder / "tls" / "ca.pem").exists():
        made += [f"tls/{p.name}" for p in make_dev_ca(folder / "tls")]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if name.endswith((".pub", ".pem")):
            path.chmod(0o644)
        elif chown and name in OWNERS:
            os.chown(path, OWNERS[name], OWNERS[name])
    return made
