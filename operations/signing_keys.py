"""The signing keys of a deployment: the front doors' ring, the simulated bank's ring, and their public halves
registered in PostgreSQL (as the owner) so the engine and the auditors can verify what they sign."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from core.settings import Settings
from core.signing import PublicKey, SigningRing, new_key_id, new_ring, read_ring, write_ring
from db import signing_keys
from db.engine import make_engine, make_sessions
from models.assertion import CHANNEL, OFFICERS


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


async def register(settings: Settings, keys: list[PublicKey], *, retire_others: bool = False) -> list[str]:
    """Register public keys as the schema owner (the application's role cannot); returns the new key ids."""
    engine = make_engine(settings, url=settings.owner_asyncpg_url)
    try:
        async with make_sessions(engine)() as session, session.begin():
            added = []
            for key in keys:
                retire = key.valid_from if retire_others else None
                if await signing_keys.register(session, key, retire_others_at=retire):
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
