"""`starter.py keys …`: the payload encryption keys (the key file's ring), the signing keys (the front
doors', the bank's and the witness's rings; their public halves registered in PostgreSQL) and the match key
shared with other programmes (core/matching.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from archive.witness import KEY_PREFIX as WITNESS_KEY_PREFIX
from archive.witness import write_public_key_file
from cli.command import command, database, fail, out
from core.client import key_ring
from core.codec import PayloadKeyError, new_ring, read_ring, write_ring
from core.formatting import moment
from core.keyfiles import write_secret
from core.matching import new_key as new_match_key
from core.settings import Settings, get_settings
from core.signing import SigningKeyError, new_key_id
from core.signing import new_ring as new_signing_ring
from core.signing import write_ring as write_signing_ring
from db import signing_keys as signing_keys_db
from models.assertion import CHANNEL, OFFICERS
from operations import signing_keys as signing_keys_ops
from runtime.secrets import make_compose_secrets
from runtime.tls import make_dev_ca

app = typer.Typer(no_args_is_help=True, help="Payload encryption keys and signing keys: create, rotate, list")


@app.command("new")
def keys_new(file: Path = typer.Option(None, help="Where to write (default: the configured key file)")) -> None:
    """Create a key file with one fresh AES-256 key. Refuses to overwrite an existing file."""
    path = file or get_settings().payload_keys_path
    if path.exists():
        fail(f"{path.name} exists; use 'keys rotate' to add a key")
    ring = new_ring()
    write_ring(path, ring)
    out.print(f"payload key {ring.active} written to {path.name}")


@app.command("rotate")
def keys_rotate(file: Path = typer.Option(None, help="The key file (default: the configured one)")) -> None:
    """Make a fresh key the active one. Old keys stay in the file: they still open what they sealed.
    Restart the worker to seal with the new key."""
    path = file or get_settings().payload_keys_path
    try:
        ring = read_ring(path).rotated()
    except (OSError, PayloadKeyError) as e:
        fail(str(e))
    write_ring(path, ring)
    out.print(f"active payload key is now {ring.active}; kept: {', '.join(k for k in ring.keys if k != ring.active)}")


@app.command("list")
def keys_list() -> None:
    """Key ids in the ring, the active one first (never the keys themselves)."""
    try:
        ring = key_ring(get_settings())
    except PayloadKeyError as e:
        fail(str(e))
    if ring is None:
        out.print("payload encryption is switched off (PAYLOAD_ENCRYPTION=false)")
        return
    for k in ring.keys:
        out.print(f"{k}{'  (active)' if k == ring.active else ''}")


@app.command("signing-new")
def keys_signing_new(
    file: Path = typer.Option(..., help="Where to write the private ring (a front door's or the bank's secret)"),
    holder: str = typer.Option("officers", help="officers (web app, command line) or channel (the bank)"),
) -> None:
    """Create a signing ring with one fresh Ed25519 key, and FILE.pub with its public half to register
    (`keys signing-register FILE.pub`, as the schema owner). Refuses to overwrite."""
    if holder not in (OFFICERS, CHANNEL):
        fail(f"--holder must be {OFFICERS} or {CHANNEL}")
    if file.exists():
        fail(f"{file.name} exists; use 'keys signing-rotate' to add a key")
    ring = new_signing_ring(new_key_id("officers-" if holder == OFFICERS else "bank-"))
    write_signing_ring(file, ring)
    file.with_name(file.name + ".pub").write_text(signing_keys_ops.public_file_text(ring, holder))
    out.print(f"signing key {ring.active} ({holder}) written to {file.name}; public half in {file.name}.pub")


@app.command("witness-new")
def keys_witness_new(
    file: Path = typer.Option(..., help="Where to write the witness's private ring (the workers')"),
) -> None:
    """Create the witness's ring (it signs the archive's copies and the checkpoints; the database never holds
    it), and FILE.pub with its public key for the readers and the auditors (WITNESS_PUBLIC_KEY_FILE). Refuses
    to overwrite: a new ring would disown everything the old one signed."""
    if file.exists():
        fail(f"{file.name} exists: the witness keeps its ring")
    ring = new_signing_ring(new_key_id(WITNESS_KEY_PREFIX))
    write_signing_ring(file, ring)
    write_public_key_file(file.with_name(file.name + ".pub"), ring)
    out.print(f"witness key {ring.active} written to {file.name}; public key in {file.name}.pub (publish it)")


@app.command("match-key")
def keys_match_key(
    file: Path = typer.Option(None, help="Where to write (default: MATCH_KEY_PATH, match-key in the state folder)"),
    force: bool = typer.Option(False, "--force", help="Replace an existing key (every keyed hash made changes)"),
) -> None:
    """Create the key shared with other programmes to match CCCD by keyed hash (HMAC-SHA256), readable by
    its owner only. Refuses to overwrite without --force: a new key matches none of the lists exchanged and
    none of the households' keyed hashes stored (append-only) made with the old one."""
    path = file or get_settings().match_key_path
    if path.exists() and not force:
        fail(f"{path.name} exists; a new key matches nothing hashed with it (--force to replace it)")
    write_secret(path, new_match_key())
    out.print(f"match key written to {path.name} (give it only to the programmes that exchange lists)")


@app.command("signing-register")
@command
async def keys_signing_register(
    settings: Settings, files: list[Path] = typer.Argument(..., help="Public key files (FILE.pub)")
) -> None:
    """Register public signing keys in PostgreSQL (as the schema owner, DATABASE_OWNER_URL): the engine and
    the auditors verify with them. A key already registered is left as it is."""
    keys = []
    for f in files:
        try:
            keys += signing_keys_ops.parse_public_file(f.read_text(encoding="utf-8"), where=f.name)
        except (OSError, ValueError) as e:
            fail(str(e))
    added = await signing_keys_ops.register(settings, keys)
    out.print(f"registered: {', '.join(added) if added else 'nothing new'} ({len(keys)} key(s) read)")


@app.command("signing-rotate")
@command(refuses=(OSError, SigningKeyError))
async def keys_signing_rotate(
    settings: Settings, bank: bool = typer.Option(False, "--bank", help="The bank's ring, not the officers")
) -> None:
    """A fresh active signing key, registered valid from now; the earlier keys stay valid for the grace
    (a step's life and the clock skew), then keep verifying what they signed before. Restart the web app (or
    the bank) within the grace to sign with it."""
    active, kept = await signing_keys_ops.rotate(settings, bank=bank)
    out.print(f"active signing key is now {active}; retired (still verifying what they signed): {', '.join(kept)}")


@app.command("signing-list")
@command
async def keys_signing_list(settings: Settings) -> None:
    """The public signing keys the engine trusts, by holder, with the period each is valid in."""
    async with database(settings) as sessions, sessions() as s:
        keys = await signing_keys_db.load(s)
    table = Table("key", "holder", "valid from", "valid until", title="Signing keys")
    for k in sorted(keys.keys.values(), key=lambda k: (k.holder, k.valid_from)):
        table.add_row(k.key_id, k.holder, moment(k.valid_from), moment(k.valid_until) if k.valid_until else "—")
    out.print(table)


@app.command("tls-dev")
def keys_tls_dev(
    folder: Path = typer.Option(Path("secrets/tls"), "--dir", help="Where to write the CA and certificates"),
) -> None:
    """Make a development CA and the certificates compose's stack uses: Temporal's frontend (mTLS), its
    clients (worker, web app, CLI) and the web app's HTTPS. A province uses its own CA instead."""
    try:
        written = make_dev_ca(folder)
    except FileExistsError as e:
        fail(str(e))
    out.print(f"development CA and certificates written: {', '.join(p.name for p in written)} (keys 0600)")


@app.command("compose-secrets")
def keys_compose_secrets(
    folder: Path = typer.Option(Path("secrets"), "--dir", help="The folder docker-compose.yml reads secrets from"),
    chown: bool = typer.Option(
        False, "--chown", help="As root: give each private secret to the container user that reads it"
    ),
) -> None:
    """Make every secret docker-compose.yml names that the folder lacks: the payload key ring, the signing
    rings (officers, bank, witness) with their public halves, the bank's callback secret, the database
    passwords and the URLs built from them, and a development CA (a province puts its own certificates in
    tls/ instead). Never replaces a file that exists: a new ring would disown what the old one sealed."""
    made = make_compose_secrets(folder, chown=chown)
    out.print(f"{len(made)} secrets made in {folder.name}/: {', '.join(made) or 'none (all were there)'}")
    if not chown:
        out.print("then, as root: the same command with --chown, so each container's user can read its secrets")
