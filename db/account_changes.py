"""The trail of account administration (table `account_changes`): one hash chain over every change.

Each row's hash is SHA-256 of the previous row's hash followed by the canonical JSON of what the row says
(at, by_user, action, user_id, details), so editing, removing or reordering a row breaks the chain from
that row on. PostgreSQL refuses UPDATE, DELETE and TRUNCATE and checks each new row's link on insert;
`verify` recomputes every hash and names the first broken row. Details never hold a secret: a password or
token is never written here, only that it changed (and a token's name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import account_changes
from models.assertion import canonical

GENESIS = "0" * 64
ACTIONS = ("add", "reset", "disable", "enable", "token", "revoke", "bootstrap")
# The trigger's lock: taken before reading the last hash, so two changes cannot both link to the same row
# (the trigger would refuse the second one's link instead of waiting for it).
_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('account_changes'))")


@dataclass(frozen=True)
class Change:
    id: int
    at: datetime
    by_user: str
    action: str
    user_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Verified:
    rows: int
    first_break: Change | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_hash(prev_hash: str, *, at: datetime, by_user: str, action: str, user_id: str,
             details: Mapping[str, Any]) -> str:  # fmt: skip
    body = canonical({"at": _utc(at), "by_user": by_user, "action": action, "user_id": user_id,
                      "details": dict(details)})  # fmt: skip
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


async def lock(session: AsyncSession) -> None:
    """Serialise account administration for the rest of the transaction (also what `record` takes): a check
    made under it (no admin has a credential yet) still holds when the change is recorded."""
    await session.execute(_LOCK)


async def record(session: AsyncSession, *, by_user: str, action: str, user_id: str,
                 details: Mapping[str, Any] | None = None) -> Change:  # fmt: skip
    """Append one change, linked to the last row, in the caller's transaction (so the change and its
    record commit together or not at all)."""
    if action not in ACTIONS:
        raise ValueError(f"account change {action!r} is not one of {', '.join(ACTIONS)}")
    details = dict(details or {})
    await lock(session)
    c = account_changes.c
    prev = await session.scalar(select(c.hash).order_by(c.id.desc()).limit(1)) or GENESIS
    # Microseconds, as PostgreSQL keeps them, so the hash recomputes from the stored row.
    at = datetime.now(UTC)
    digest = row_hash(prev, at=at, by_user=by_user, action=action, user_id=user_id, details=details)
    new_id = await session.scalar(account_changes.insert().values(
        at=at, by_user=by_user, action=action, user_id=user_id, details=details, prev_hash=prev, hash=digest,
    ).returning(c.id))  # fmt: skip
    return Change(new_id, at, by_user, action, user_id, details, prev, digest)


async def read(session: AsyncSession, *, user_id: str | None = None) -> list[Change]:
    c = account_changes.c
    q = select(account_changes).order_by(c.id)
    if user_id is not None:
        q = q.where(c.user_id == user_id)
    rows = (await session.execute(q)).mappings().all()
    return [Change(**{k: r[k] for k in Change.__dataclass_fields__}) for r in rows]


def verify_rows(rows: list[Change]) -> Verified:
    """Recompute the chain in id order; the first row whose link or hash is wrong, and why."""
    prev = GENESIS
    for n, row in enumerate(rows):
        if row.prev_hash.strip() != prev:
            return Verified(n, row, "its prev_hash is not the hash of the row before (a row removed or moved)")
        expected = row_hash(prev, at=row.at, by_user=row.by_user, action=row.action, user_id=row.user_id,
                            details=row.details)  # fmt: skip
        if row.hash.strip() != expected:
            return Verified(n, row, "its hash does not match what it says (the row was edited)")
        prev = expected
    return Verified(len(rows))


async def verify(session: AsyncSession) -> Verified:
    return verify_rows(await read(session))
