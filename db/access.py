"""Who may sign in as which user: passwords (argon2), server-side sessions, API tokens, login throttling.

A secret is never stored: passwords as argon2 hashes, session and API tokens as their SHA-256. What a
signed-in user may see and do is not decided here: the user's role, agency and jurisdiction come from
`users`, and the engine checks them on every step.

A stored hash proves something only when account administration put it there: the password or token is
accepted only if the latest signed change of it in the account trail names exactly the stored hash
(db/account_changes.py `credential_set`). So a hash written straight into `user_credentials` or
`api_tokens` with the application's login (which can write both) signs nobody in. Only operations/accounts.py
calls `set_password` and `create_token`, each with its signed trail row. Likewise a session is good only
with the web app's signature over it (`open_session`), so a row inserted into `web_sessions` is no session.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Refusal
from core.signing import SigningRing, Unauthenticated
from db import account_changes as trail
from db import signing_keys
from db import users as users_db
from db.schema import api_tokens, login_attempts, user_credentials, users, web_sessions
from db.users import User
from models.assertion import OFFICERS, ActionAssertion, digest_of

HASHER = PasswordHasher()
MIN_PASSWORD = 10
# Five wrong passwords for one user name within the window lock that name until the window has passed
# since the last failure, whoever tries: guessing is slowed to a handful per quarter hour.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
SESSION_TTL = timedelta(hours=8)  # a working day
# Who may administer accounts (add, reset, disable, enable, tokens): `starter.py users …`.
ACCOUNT_ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class SignedIn:
    user: User
    csrf_token: str | None  # sessions carry one; API tokens need none (no ambient cookie to abuse)
    via: str  # "session", "token", or "password" (checked, no session opened: the command line)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_password_rules(user_id: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Refusal("WeakPassword", f"a password needs at least {MIN_PASSWORD} characters")
    if user_id.lower() in password.lower():
        raise Refusal("WeakPassword", "a password must not contain the user name")


def not_set_through_administration(user_id: str) -> Refusal:
    return Refusal("Unauthenticated", f"the credential of {user_id} was not set through account administration")


async def set_password(session: AsyncSession, user_id: str, password: str) -> str:
    """Store the password's argon2 hash, and return that hash (for the account trail to name)."""
    if await users_db.get(session, user_id) is None:
        raise Refusal("UnknownUser", f"user {user_id!r} is not registered")
    check_password_rules(user_id, password)
    stored = HASHER.hash(password)
    stmt = pg_insert(user_credentials).values(user_id=user_id, password_hash=stored)
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id"], set_={"password_hash": stmt.excluded.password_hash, "changed_at": func.now()}
    )
    await session.execute(stmt)
    return stored


async def set_active(session: AsyncSession, user_id: str, active: bool) -> None:
    """Disable (or enable again) a user; disabling also ends their sessions and revokes their tokens."""
    done = await session.execute(update(users).where(users.c.user_id == user_id).values(active=active))
    if done.rowcount == 0:
        raise Refusal("UnknownUser", f"user {user_id!r} is not registered")
    if not active:
        s, t = web_sessions.c, api_tokens.c
        await session.execute(
            update(web_sessions).where(s.user_id == user_id, s.ended_at.is_(None)).values(ended_at=func.now())
        )
        await session.execute(
            update(api_tokens).where(t.user_id == user_id, t.revoked_at.is_(None)).values(revoked_at=func.now())
        )


async def _recent_failures(session: AsyncSession, user_id: str, now: datetime) -> tuple[int, datetime | None]:
    """Failures since the last success within the window, and the latest of them."""
    a = login_attempts.c
    last_ok = select(func.max(a.at)).where(a.user_id == user_id, a.ok).scalar_subquery()
    n, latest = (
        await session.execute(
            select(func.count(), func.max(a.at)).where(
                a.user_id == user_id,
                a.ok.is_(False),
                a.at > now - FAILURE_WINDOW,
                a.at > func.coalesce(last_ok, datetime(1970, 1, 1, tzinfo=UTC)),
            )
        )
    ).one()
    return n, latest


@dataclass(frozen=True)
class SignInOutcome:
    """A sign-in's answer. A refused attempt is still recorded, so the caller commits either way."""

    token: str | None = None
    who: SignedIn | None = None
    refusal: Refusal | None = None


async def sign_in(
    session: AsyncSession, user_id: str, password: str, client: str, *, signer: SigningRing
) -> SignInOutcome:
    """Check a password and open a session signed by `signer` (the web app's front-door ring). The caller
    commits (also on a refusal: the attempt is recorded)."""
    checked = await check_password(session, user_id, password, client)
    if checked.refusal is not None:
        return checked
    token, signed = await open_session(session, checked.who.user, signer=signer)
    return SignInOutcome(token=token, who=signed)


async def check_password(session: AsyncSession, user_id: str, password: str, client: str) -> SignInOutcome:
    """Who a password proves, without opening a session (the web's sign-in and the command line share it).
    Every checked attempt is recorded; a name locked by too many failures is refused before its password is
    looked at; a disabled user is refused. The caller commits (also on a refusal)."""
    now = datetime.now(UTC)
    failures, latest = await _recent_failures(session, user_id, now)
    if failures >= MAX_FAILURES and latest is not None:
        wait = int((latest + FAILURE_WINDOW - now).total_seconds() // 60) + 1
        why = f"too many failed sign-ins for {user_id!r}: try again in {wait} min"
        return SignInOutcome(refusal=Refusal("TooManyAttempts", why))
    user = await users_db.get(session, user_id)
    stored = await session.scalar(select(user_credentials.c.password_hash).where(user_credentials.c.user_id == user_id))
    ok = False
    if user is not None and stored is not None:
        try:
            ok = HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        HASHER.hash(password)  # as slow as a real check, so timing does not tell which names exist
    # The right password for a hash account administration did not set counts as a failed attempt.
    bound = ok and await trail.credential_set(session, user_id, stored)
    await session.execute(login_attempts.insert().values(user_id=user_id, client=client, ok=bound))
    if not ok:
        return SignInOutcome(refusal=Refusal("BadCredentials", "user name or password is wrong"))
    if not bound:
        return SignInOutcome(refusal=not_set_through_administration(user_id))
    if not user.active:
        return SignInOutcome(refusal=Refusal("UserDisabled", f"user {user_id!r} is disabled"))
    # No rehash on sign-in (argon2's parameters moving on): the stored hash is the one the trail names, and
    # only account administration may change it. A new hash comes with the next reset.
    return SignInOutcome(who=SignedIn(user, None, "password"))


SESSION_WORKFLOW, SESSION_STEP = "web-session", "session"  # what a session's assertion names


def _session_digest(token_hash: str, user_id: str, csrf: str) -> str:
    return digest_of({"token_hash": token_hash, "user_id": user_id, "csrf_token": csrf})


async def open_session(session: AsyncSession, user: User, *, signer: SigningRing) -> tuple[str, SignedIn]:
    """A new session for a user whose identity has been established (by `sign_in`'s password check), signed
    by the web app's ring for its lifetime: the signature is what makes the row a session."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    a = signer.sign(
        workflow_id=SESSION_WORKFLOW,
        step=SESSION_STEP,
        user_id=user.user_id,
        ttl=SESSION_TTL,
        input_digest=_session_digest(digest(token), user.user_id, csrf),
    )
    await session.execute(
        web_sessions.insert().values(
            token_hash=digest(token),
            user_id=user.user_id,
            csrf_token=csrf,
            expires_at=a.expires_at,
            assertion=a.model_dump(mode="json"),
        )
    )
    return token, SignedIn(user, csrf, "session")


async def session_user(session: AsyncSession, token: str) -> SignedIn | None:
    s = web_sessions.c
    row = (
        await session.execute(
            select(s.user_id, s.csrf_token, s.assertion).where(
                s.token_hash == digest(token), s.ended_at.is_(None), s.expires_at > func.now()
            )
        )
    ).one_or_none()
    if row is None or row.assertion is None:
        return None
    try:
        a = ActionAssertion.model_validate(row.assertion)
        (await signing_keys.trusted_for(session, a.key_id)).verify(
            a,
            workflow_id=SESSION_WORKFLOW,
            step=SESSION_STEP,
            input_digest=_session_digest(digest(token), row.user_id, row.csrf_token),
            user_id=row.user_id,
            holder=OFFICERS,
            now=datetime.now(UTC),
            max_ttl=SESSION_TTL,
        )
    except (Unauthenticated, ValidationError):
        return None  # not a session the web app opened
    user = await users_db.get(session, row.user_id)
    return SignedIn(user, row.csrf_token, "session") if user and user.active else None


async def sign_out(session: AsyncSession, token: str) -> None:
    await session.execute(
        update(web_sessions).where(web_sessions.c.token_hash == digest(token)).values(ended_at=func.now())
    )


async def create_token(session: AsyncSession, user_id: str, name: str) -> str:
    """A new API token for a machine client acting as `user_id`; shown once, stored as its hash."""
    if await users_db.get(session, user_id) is None:
        raise Refusal("UnknownUser", f"user {user_id!r} is not registered")
    token = "xnt_" + secrets.token_urlsafe(32)
    t = api_tokens.c
    taken = await session.scalar(select(t.id).where(t.user_id == user_id, t.name == name))
    if taken is not None:
        raise Refusal("TokenExists", f"user {user_id!r} already has a token named {name!r}; revoke it first")
    await session.execute(api_tokens.insert().values(user_id=user_id, name=name, token_hash=digest(token)))
    return token


async def revoke_token(session: AsyncSession, user_id: str, name: str) -> None:
    t = api_tokens.c
    done = await session.execute(
        update(api_tokens)
        .where(t.user_id == user_id, t.name == name, t.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    if done.rowcount == 0:
        raise Refusal("UnknownToken", f"user {user_id!r} has no live token named {name!r}")


async def check_token(session: AsyncSession, token: str) -> SignInOutcome:
    """Who an API token proves: a live token of an active user, issued through account administration."""
    t = api_tokens.c
    row = (
        await session.execute(
            update(api_tokens)
            .where(t.token_hash == digest(token), t.revoked_at.is_(None))
            .values(last_used_at=func.now())
            .returning(t.user_id, t.name, t.token_hash)
        )
    ).one_or_none()
    user = await users_db.get(session, row.user_id) if row is not None else None
    if row is None or user is None or not user.active:
        why = "the API token is not known, was revoked, or its user is disabled"
        return SignInOutcome(refusal=Refusal("BadCredentials", why))
    if not await trail.credential_set(session, row.user_id, row.token_hash, token=row.name):
        return SignInOutcome(refusal=not_set_through_administration(row.user_id))
    return SignInOutcome(who=SignedIn(user, None, "token"))


async def token_user(session: AsyncSession, token: str) -> SignedIn | None:
    return (await check_token(session, token)).who


async def admins_with_credentials(session: AsyncSession) -> list[str]:
    """Active administrators who can prove who they are (a password or a live token). While there is none,
    the first administrator may be set up (`users bootstrap`); after that only an administrator may."""
    u, c, t = users.c, user_credentials.c, api_tokens.c
    has_password = select(c.user_id).where(c.user_id == u.user_id).exists()
    has_token = select(t.id).where(t.user_id == u.user_id, t.revoked_at.is_(None)).exists()
    q = select(u.user_id).where(u.role == ACCOUNT_ADMIN_ROLE, u.active, has_password | has_token).order_by(u.user_id)
    return list(await session.scalars(q))
