"""Account administration: each change made in the caller's transaction together with its row in the
tamper-evident trail (db/account_changes.py), so there is no change without its record.

`by` is the administrator who proved who they are (operations/credentials.py); `SETUP` names changes made
while setting a deployment up (the first administrator, the demo's sign-ins), by whoever runs the stack.
`signer` is the officers' front-door ring (core/signing.py `load_ring`) of the front door that proved it:
every trail row is signed with it, and a row that sets a password or a token names the stored hash
(`details["credential"]`), which is what lets a sign-in accept that credential (operations/access.py). This module
is the one place a credential is set.
"""

from __future__ import annotations

from core.errors import Refusal
from core.signing import SigningRing
from db import access as access_db
from db import account_changes as trail
from db import users as users_db
from db.engine import Session as AsyncSession
from models.actor import ACCOUNT_ADMIN_ROLE
from operations import access

SETUP = "(setup)"


def _where(row: dict) -> str:
    return " / ".join(filter(None, (row.get("province"), row.get("district"), row.get("commune"))))


def _what(row: dict) -> dict:
    return {"role": row["role"], "agency": row["agency"], "jurisdiction": _where(row)}


async def _require_admin(session: AsyncSession, by: str) -> None:
    """Only an active administrator changes accounts (or the deployment's setup, `SETUP`): checked here, in
    the change's own transaction, whatever front door proved who `by` is."""
    if by == SETUP:
        return
    admin = await users_db.get(session, by)
    if admin is None or not admin.active or admin.role != ACCOUNT_ADMIN_ROLE:
        raise Refusal(
            "NotAllowed",
            f"user {by!r} is not an active {ACCOUNT_ADMIN_ROLE}: only an administrator changes accounts",
        )


def _set(stored: str) -> dict:
    return {"credential": trail.credential_digest(stored)}


async def add_user(session: AsyncSession, by: str, row: dict, password: str, *, signer: SigningRing) -> None:
    await _require_admin(session, by)
    if await users_db.get(session, row["user_id"]) is not None:
        raise Refusal("UserExists", f"user {row['user_id']!r} is already registered (use 'users reset')")
    await users_db.upsert(session, [row | {"active": True}])
    stored = await access.set_password(session, row["user_id"], password)
    await trail.record(
        session, signer=signer, by_user=by, action="add", user_id=row["user_id"], details=_what(row) | _set(stored)
    )


async def reset_password(session: AsyncSession, by: str, user_id: str, password: str, *, signer: SigningRing) -> None:
    await _require_admin(session, by)
    stored = await access.set_password(session, user_id, password)
    await trail.record(session, signer=signer, by_user=by, action="reset", user_id=user_id, details=_set(stored))


async def set_active(session: AsyncSession, by: str, user_id: str, active: bool, *, signer: SigningRing) -> None:
    await _require_admin(session, by)
    await access_db.set_active(session, user_id, active)
    await trail.record(session, signer=signer, by_user=by, action="enable" if active else "disable", user_id=user_id)


async def issue_token(session: AsyncSession, by: str, user_id: str, name: str, *, signer: SigningRing) -> str:
    await _require_admin(session, by)
    token = await access.create_token(session, user_id, name)
    await trail.record(
        session,
        signer=signer,
        by_user=by,
        action="token",
        user_id=user_id,
        details={"name": name} | _set(access.digest(token)),
    )
    return token


async def revoke_token(session: AsyncSession, by: str, user_id: str, name: str, *, signer: SigningRing) -> None:
    await _require_admin(session, by)
    await access_db.revoke_token(session, user_id, name)
    await trail.record(session, signer=signer, by_user=by, action="revoke", user_id=user_id, details={"name": name})


async def bootstrap(
    session: AsyncSession, user_id: str, password: str, row: dict | None = None, *, signer: SigningRing
) -> None:
    """The first administrator's password (the user created from `row` when not registered). Only while no
    active administrator can prove who they are: afterwards accounts are an administrator's to change.
    Checked under the trail's lock, so two first runs cannot both pass."""
    await trail.lock(session)
    if admins := await access.admins_with_credentials(session):
        raise Refusal(
            "AdminExists",
            f"an administrator can already sign in ({', '.join(admins)}): ask them (starter.py users … --admin USER)",
        )
    user = await users_db.get(session, user_id)
    if user is None:
        if row is None:
            raise Refusal("UnknownUser", f"user {user_id!r} is not registered: give --name and --agency")
        row = row | {"user_id": user_id, "role": ACCOUNT_ADMIN_ROLE, "active": True}
        await users_db.upsert(session, [row])
    elif user.role != ACCOUNT_ADMIN_ROLE or not user.active:
        raise Refusal(
            "NotAllowed",
            f"user {user_id!r} is {user.role}{'' if user.active else ' (disabled)'}: "
            f"the first administrator must be an active {ACCOUNT_ADMIN_ROLE}",
        )
    else:
        row = {
            "role": user.role,
            "agency": user.agency,
            "province": user.province,
            "district": user.district,
            "commune": user.commune,
        }
    stored = await access.set_password(session, user_id, password)
    await trail.record(
        session, signer=signer, by_user=SETUP, action="bootstrap", user_id=user_id, details=_what(row) | _set(stored)
    )
