"""Who may sign in as which user: passwords (argon2), server-side sessions, API tokens, login throttling.

A secret is never stored: passwords as argon2 hashes, session and API tokens as their SHA-256. What a
signed-in user may see and do is not decided here: the user's role, agency and jurisdiction come from
`users`, and the engine checks them on every step.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import DomainError
from db import users as users_db
from db.schema import api_tokens, login_attempts, user_credentials, users, web_sessions
from db.users import User

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
        raise DomainError("WeakPassword", f"a password needs at least {MIN_PASSWORD} characters")
    if user_id.lower() in password.lower():
        raise DomainError("WeakPassword", "a password must not contain the user name")


async def set_password(session: AsyncSession, user_id: str, password: str) -> None:
    if await users_db.get(session, user_id) is None:
        raise DomainError("UnknownUser", f"user {user_id!r} is not registered")
    check_password_rules(user_id, password)
    stmt = pg_insert(user_credentials).values(user_id=user_id, password_hash=HASHER.hash(password))
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id"], set_={"password_hash": stmt.excluded.password_hash, "changed_at": func.now()}
    )
    await session.execute(stmt)


async def set_active(session: AsyncSession, user_id: str, active: bool) -> None:
    """Disable (or enable again) a user; disabling also ends their sessions and revokes their tokens."""
    done = await session.execute(update(users).where(users.c.user_id == user_id).values(active=active))
    if done.rowcount == 0:
        raise DomainError("UnknownUser", f"user {user_id!r} is not registered")
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
    n, latest = (await session.execute(
        select(func.count(), func.max(a.at)).where(
            a.user_id == user_id, a.ok.is_(False), a.at > now - FAILURE_WINDOW,
            a.at > func.coalesce(last_ok, datetime(1970, 1, 1, tzinfo=UTC)))
    )).one()  # fmt: skip
    return n, latest


@dataclass(frozen=True)
class SignInOutcome:
    """A sign-in's answer. A refused attempt is still recorded, so the caller commits either way."""

    token: str | None = None
    who: SignedIn | None = None
    refusal: DomainError | None = None


async def sign_in(session: AsyncSession, user_id: str, password: str, client: str) -> SignInOutcome:
    """Check a password and open a session. The caller commits (also on a refusal: the attempt is recorded)."""
    checked = await check_password(session, user_id, password, client)
    if checked.refusal is not None:
        return checked
    token, signed = await open_session(session, checked.who.user)
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
        return SignInOutcome(refusal=DomainError("TooManyAttempts", why))
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
    await session.execute(login_attempts.insert().values(user_id=user_id, client=client, ok=ok))
    if not ok:
        return SignInOutcome(refusal=DomainError("BadCredentials", "user name or password is wrong"))
    if not user.active:
        return SignInOutcome(refusal=DomainError("UserDisabled", f"user {user_id!r} is disabled"))
    if HASHER.check_needs_rehash(stored):
        await session.execute(update(user_credentials).where(user_credentials.c.user_id == user_id)
                              .values(password_hash=HASHER.hash(password)))  # fmt: skip
    return SignInOutcome(who=SignedIn(user, None, "password"))


async def open_session(session: AsyncSession, user: User) -> tuple[str, SignedIn]:
    """A new session for a user whose identity has been established (by `sign_in`'s password check)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    await session.execute(web_sessions.insert().values(token_hash=digest(token), user_id=user.user_id, csrf_token=csrf,
                                                       expires_at=datetime.now(UTC) + SESSION_TTL))  # fmt: skip
    return token, SignedIn(user, csrf, "session")


async def session_user(session: AsyncSession, token: str) -> SignedIn | None:
    s = web_sessions.c
    row = (await session.execute(select(s.user_id, s.csrf_token).where(
        s.token_hash == digest(token), s.ended_at.is_(None), s.expires_at > func.now()))).one_or_none()  # fmt: skip
    if row is None:
        return None
    user = await users_db.get(session, row.user_id)
    return SignedIn(user, row.csrf_token, "session") if user and user.active else None


async def sign_out(session: AsyncSession, token: str) -> None:
    await session.execute(update(web_sessions).where(web_sessions.c.token_hash == digest(token))
                          .values(ended_at=func.now()))  # fmt: skip


async def create_token(session: AsyncSession, user_id: str, name: str) -> str:
    """A new API token for a machine client acting as `user_id`; shown once, stored as its hash."""
    if await users_db.get(session, user_id) is None:
        raise DomainError("UnknownUser", f"user {user_id!r} is not registered")
    token = "xnt_" + secrets.token_urlsafe(32)
    t = api_tokens.c
    taken = await session.scalar(select(t.id).where(t.user_id == user_id, t.name == name))
    if taken is not None:
        raise DomainError("TokenExists", f"user {user_id!r} already has a token named {name!r}; revoke it first")
    await session.execute(api_tokens.insert().values(user_id=user_id, name=name, token_hash=digest(token)))
    return token


async def revoke_token(session: AsyncSession, user_id: str, name: str) -> None:
    t = api_tokens.c
    done = await session.execute(
        update(api_tokens).where(t.user_id == user_id, t.name == name, t.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    if done.rowcount == 0:
        raise DomainError("UnknownToken", f"user {user_id!r} has no live token named {name!r}")


async def token_user(session: AsyncSession, token: str) -> SignedIn | None:
    t = api_tokens.c
    row = (await session.execute(
        update(api_tokens).where(t.token_hash == digest(token), t.revoked_at.is_(None))
        .values(last_used_at=func.now()).returning(t.user_id))).one_or_none()  # fmt: skip
    if row is None:
        return None
    user = await users_db.get(session, row.user_id)
    return SignedIn(user, None, "token") if user and user.active else None


async def admins_with_credentials(session: AsyncSession) -> list[str]:
    """Active administrators who can prove who they are (a password or a live token). While there is none,
    the first administrator may be set up (`users bootstrap`); after that only an administrator may."""
    u, c, t = users.c, user_credentials.c, api_tokens.c
    has_password = select(c.user_id).where(c.user_id == u.user_id).exists()
    has_token = select(t.id).where(t.user_id == u.user_id, t.revoked_at.is_(None)).exists()
    q = select(u.user_id).where(u.role == ACCOUNT_ADMIN_ROLE, u.active, has_password | has_token).order_by(u.user_id)
    return list(await session.scalars(q))
