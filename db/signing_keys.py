"""The public keys that verify signed action assertions (table `signing_keys`).

The application's role may only read them. `register` runs with the owner's login (`stack up`, `keys
signing-rotate`, the test suite's fixtures): a process holding only the application's login cannot make a
key the engine trusts.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.signing import PublicKey, TrustedKeys
from db.schema import signing_keys


async def load(session: AsyncSession) -> TrustedKeys:
    rows = (await session.execute(select(signing_keys))).mappings().all()
    return TrustedKeys.of(PublicKey.from_dict(r) for r in rows)


async def get(session: AsyncSession, key_id: str) -> PublicKey | None:
    row = (await session.execute(select(signing_keys).where(signing_keys.c.key_id == key_id))).mappings().first()
    return PublicKey.from_dict(row) if row else None


async def trusted_for(session: AsyncSession, key_id: str) -> TrustedKeys:
    """The one key an assertion names (none if it is not registered): what a single check needs, one row
    instead of the whole table."""
    key = await get(session, key_id)
    return TrustedKeys.of([key] if key else [])


async def register(session: AsyncSession, key: PublicKey, *, retire_others_at: datetime | None = None) -> bool:
    """Add a public key (nothing if its id is known); with `retire_others_at`, the holder's other open keys
    stop being valid then (they still verify what they signed before). Returns True when it was new."""
    d = key.as_dict()
    stmt = (
        pg_insert(signing_keys)
        .values(
            key_id=key.key_id,
            holder=key.holder,
            public_key=d["public_key"],
            valid_from=key.valid_from,
            valid_until=key.valid_until,
        )
        .on_conflict_do_nothing(index_elements=["key_id"])
    )
    new = (await session.execute(stmt)).rowcount == 1
    if new and retire_others_at is not None:
        c = signing_keys.c
        await session.execute(
            update(signing_keys)
            .where(c.holder == key.holder, c.key_id != key.key_id, c.valid_until.is_(None))
            .values(valid_until=retire_others_at)
        )
    return new
