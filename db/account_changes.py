"""The trail of account administration (table `account_changes`): one hash chain over every change, each
change signed by the front door that authenticated the administrator.

Each row's hash is SHA-256 of the previous row's hash followed by the canonical JSON of what the row says
(at, by_user, action, user_id, details), so editing, removing or reordering a row breaks the chain from
that row on. PostgreSQL refuses UPDATE, DELETE and TRUNCATE and checks each new row's link on insert.
The chain has no secret, so it alone cannot tell a row the application's login appended from a real one:
each row also carries the officers' front door's Ed25519 assertion (core/signing.py) over the row's
content, its link included (workflow `accounts`, step `account:<action>`, user = who made the change).
`verify` recomputes every hash, checks every signature against `signing_keys`, and names the first row
that fails.

A row that sets a password or issues a token names what it set: `details["credential"]`, the SHA-256 of
the stored argon2 hash or token hash (never a secret). A sign-in accepts a credential only when the latest
signed change of it names exactly what is stored (`credential_set`): a hash written into `user_credentials`
or `api_tokens` by anyone but account administration proves nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.signing import SigningRing, TrustedKeys, Unauthenticated
from db import signing_keys
from db.schema import account_changes
from models.assertion import OFFICERS, ActionAssertion, canonical, digest_of

GENESIS = "0" * 64
ACTIONS = ("add", "reset", "disable", "enable", "token", "revoke", "bootstrap")
PASSWORD_ACTIONS = ("add", "reset", "bootstrap")  # the changes that set a password
TOKEN_ACTIONS = ("token", "revoke")  # the changes of one token (by its name)
WORKFLOW = "accounts"  # what a change's assertion names as its workflow id
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
    assertion: dict[str, Any] | None = None


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


def row_hash(
    prev_hash: str, *, at: datetime, by_user: str, action: str, user_id: str, details: Mapping[str, Any]
) -> str:
    body = canonical(
        {"at": _utc(at), "by_user": by_user, "action": action, "user_id": user_id, "details": dict(details)}
    )
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


def signed_digest(
    prev_hash: str, *, at: datetime, by_user: str, action: str, user_id: str, details: Mapping[str, Any]
) -> str:
    """What a change's assertion covers: its content and its link, so a signed row cannot be moved."""
    return digest_of(
        {
            "prev_hash": prev_hash.strip(),
            "at": _utc(at),
            "by_user": by_user,
            "action": action,
            "user_id": user_id,
            "details": dict(details),
        }
    )


def step_of(action: str) -> str:
    return f"account:{action}"


def credential_digest(stored: str) -> str:
    """How a change names the credential it set: SHA-256 of the stored hash (the secret is never here)."""
    return hashlib.sha256(stored.encode()).hexdigest()


def signature_problem(row: Change, keys: TrustedKeys) -> str | None:
    """Why the row is not signed by the officers' front door for exactly what it says, or None."""
    if row.assertion is None:
        return "it carries no front door's signature (written around account administration)"
    try:
        a = ActionAssertion.model_validate(row.assertion)
    except ValidationError:
        return "its signature cannot be read"
    digest = signed_digest(
        row.prev_hash, at=row.at, by_user=row.by_user, action=row.action, user_id=row.user_id, details=row.details
    )
    try:
        keys.verify(
            a,
            workflow_id=WORKFLOW,
            step=step_of(row.action),
            input_digest=digest,
            user_id=row.by_user,
            holder=OFFICERS,
            now=a.issued_at,
            check_expiry=False,
        )
    except Unauthenticated as e:
        return f"its signature is not a front door's for this row ({e.message})"
    return None


async def lock(session: AsyncSession) -> None:
    """Serialise account administration for the rest of the transaction (also what `record` takes): a check
    made under it (no admin has a credential yet) still holds when the change is recorded."""
    await session.execute(_LOCK)


async def record(
    session: AsyncSession,
    *,
    signer: SigningRing,
    by_user: str,
    action: str,
    user_id: str,
    details: Mapping[str, Any] | None = None,
) -> Change:
    """Append one change, linked to the last row and signed by `signer` (the front door that authenticated
    `by_user`), in the caller's transaction (so the change and its record commit together or not at all)."""
    if action not in ACTIONS:
        raise ValueError(f"account change {action!r} is not one of {', '.join(ACTIONS)}")
    details = dict(details or {})
    await lock(session)
    c = account_changes.c
    prev = await session.scalar(select(c.hash).order_by(c.id.desc()).limit(1)) or GENESIS
    # Microseconds, as PostgreSQL keeps them, so the hash recomputes from the stored row.
    at = datetime.now(UTC)
    digest = row_hash(prev, at=at, by_user=by_user, action=action, user_id=user_id, details=details)
    covered = signed_digest(prev, at=at, by_user=by_user, action=action, user_id=user_id, details=details)
    signed = signer.sign(workflow_id=WORKFLOW, step=step_of(action), input_digest=covered, user_id=by_user)
    new_id = await session.scalar(
        account_changes.insert()
        .values(
            at=at,
            by_user=by_user,
            action=action,
            user_id=user_id,
            details=details,
            prev_hash=prev,
            hash=digest,
            assertion=signed.model_dump(mode="json"),
        )
        .returning(c.id)
    )
    return Change(new_id, at, by_user, action, user_id, details, prev, digest, signed.model_dump(mode="json"))


async def read(session: AsyncSession, *, user_id: str | None = None) -> list[Change]:
    c = account_changes.c
    q = select(account_changes).order_by(c.id)
    if user_id is not None:
        q = q.where(c.user_id == user_id)
    rows = (await session.execute(q)).mappings().all()
    return [Change(**{k: r[k] for k in Change.__dataclass_fields__}) for r in rows]


def verify_rows(rows: list[Change], keys: TrustedKeys) -> Verified:
    """Recompute the chain in id order and check each row's signature with `keys` (the officers' public
    keys); the first row whose link, hash or signature is wrong, and why."""
    prev = GENESIS
    for n, row in enumerate(rows):
        if row.prev_hash.strip() != prev:
            return Verified(n, row, "its prev_hash is not the hash of the row before (a row removed or moved)")
        expected = row_hash(
            prev, at=row.at, by_user=row.by_user, action=row.action, user_id=row.user_id, details=row.details
        )
        if row.hash.strip() != expected:
            return Verified(n, row, "its hash does not match what it says (the row was edited)")
        if (problem := signature_problem(row, keys)) is not None:
            return Verified(n, row, problem)
        prev = expected
    return Verified(len(rows))


async def verify(session: AsyncSession) -> Verified:
    return verify_rows(await read(session), await signing_keys.load(session))


async def credential_set(session: AsyncSession, user_id: str, stored: str, *, token: str | None = None) -> bool:
    """Whether the latest signed change of `user_id`'s password (or of their token named `token`) set
    exactly `stored` (the argon2 hash, or the token's hash). Rows whose signature fails are passed over:
    a forged row cannot make a credential good, only the front door's can."""
    c = account_changes.c
    q = select(account_changes).where(c.user_id == user_id, c.assertion.is_not(None)).order_by(c.id.desc())
    if token is None:
        q = q.where(c.action.in_(PASSWORD_ACTIONS))
    else:
        q = q.where(c.action.in_(TOKEN_ACTIONS), c.details["name"].astext == token)
    for r in (await session.execute(q)).mappings():
        row = Change(**{k: r[k] for k in Change.__dataclass_fields__})
        keys = await signing_keys.trusted_for(session, str((row.assertion or {}).get("key_id", "")))
        if signature_problem(row, keys) is None:
            return row.action != "revoke" and row.details.get("credential") == credential_digest(stored)
    return False
