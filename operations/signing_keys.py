"""The signing keys of a deployment: the front doors' ring, the simulated bank's ring, and their public halves
registered in PostgreSQL (as the owner) so the engine and the auditors can verify what they sign."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from core.settings import Settings
from core.signing import CLOCK_SKEW, STEP_TTL, PublicKey, SigningRing, new_key_id, new_ring, read_ring, write_ring
from db import signing_keys
from db.engine import make_engine, make_sessions
from models.assertion import CHANNEL, OFFICERS

# A rotated-out key still signs for this long: the front doors that still hold only it (until they are
# restarted) and the steps they signed just before keep working, and workers learn the new key meanwhile.
ROTATION_GRACE = STEP_TTL + CLOCK_SKEW


def ensure_ring(path: Path, prefix: str) -> tuple[SigningRing, bool]:
    """The ring in `path`, created with one fresh key when missing; (ring, created)."""
    if path.exists():
        return read_ring(path), False
    ring = new_ring(new_key_id(prefix))
    write_ring(path, ring)
    return ring, True


def public_keys(ring: SigningRing, holder: str, valid_from: datetime | None = None) -> list[PublicKey]:
    """Every key of the ring as a public key of `holder`: the active one valid from `valid_from` on."""
    at = valid_from or datetime.now(UTC)
    return [PublicKey(key_id=k, holder=holder, public=ring.public(k), valid_from=at) for k in ring.keys]


async def register(settings: Settings, keys: list[PublicKey], *, retire_at: datetime | None = None) -> list[str]:
    """Register public keys as the schema owner (the application's role cannot); returns the new key ids.
    With `retire_at`, each new key's holder's other open keys stop being valid then."""
    engine = make_engine(settings, url=settings.owner_asyncpg_url)
    try:
        async with make_sessions(engine)() as session, session.begin():
            added = []
            for key in keys:
                if await signing_keys.register(session, key, retire_others_at=retire_at):
                    added.append(key.key_id)
            return added
    finally:
        await engine.dispose()


async def ensure_stack_keys(settings: Settings) -> list[str]:
    """The embedded stack's rings (created on first start) with their public keys registered; returns what
    was created or registered, for the operator to read."""
    said = []
    officers, made = ensure_ring(settings.signing_keys_path, "officers-")
    if made:
        said.append(f"signing key {officers.active} created ({settings.signing_keys_path.name})")
    bank, made = ensure_ring(settings.bank_signing_keys_path, "bank-")
    if made:
        said.append(f"bank signing key {bank.active} created ({settings.bank_signing_keys_path.name})")
    keys = public_keys(officers, OFFICERS)[:1] + public_keys(bank, CHANNEL)[:1]
    for key_id in await register(settings, keys):
        said.append(f"public key {key_id} registered in signing_keys")
    return said


async def rotate(settings: Settings, *, bank: bool = False) -> tuple[str, list[str]]:
    """A fresh active key in the front doors' (or the bank's) ring, its public half registered valid from
    now; the holder's earlier keys stop being valid after ROTATION_GRACE but keep verifying what they signed
    before. Returns (new key id, kept key ids). Restart the front doors within the grace to sign with it."""
    path = settings.bank_signing_keys_path if bank else settings.signing_keys_path
    ring = read_ring(path).rotated(new_key_id("bank-" if bank else "officers-"))
    now = datetime.now(UTC)
    await register(settings, public_keys(ring, CHANNEL if bank else OFFICERS, now)[:1], retire_at=now + ROTATION_GRACE)
    write_ring(path, ring)  # only once the engine knows the new key: a front door never signs with an unknown one
    return ring.active, [k for k in ring.keys if k != ring.active]


def public_file_text(ring: SigningRing, holder: str) -> str:
    """The ring's public halves as `key_id holder public-key` lines: what an operator hands to whoever
    registers them (the owner's login never needs the private ring)."""
    return "".join(f"{key.key_id} {holder} {key.as_dict()['public_key']}\n" for key in public_keys(ring, holder))


def parse_public_file(text: str, *, where: str, valid_from: datetime | None = None) -> list[PublicKey]:
    """Public keys from `public_file_text` lines; a clear error naming the line otherwise."""
    at = valid_from or datetime.now(UTC)
    keys = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[1] not in (OFFICERS, CHANNEL):
            raise ValueError(f"{where}, line {n}: expected 'key-id officers|channel public-key'")
        try:
            keys.append(
                PublicKey.from_dict({"key_id": parts[0], "holder": parts[1], "public_key": parts[2], "valid_from": at})
            )
        except ValueError as err:
            raise ValueError(f"{where}, line {n}: {err}") from None
        if len(keys[-1].public) != 32:
            raise ValueError(f"{where}, line {n}: an Ed25519 public key has 32 bytes")
    return keys
