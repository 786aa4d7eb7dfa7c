"""The sign-in tables: password hashes, login attempts, server-side sessions and API tokens. Queries and
writes only; what they prove, and when a sign-in is refused, is decided in operations/access.py. Functions
flush, never commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Refusal
from db.schema import api_tokens, login_attempts, user_credentials, users, web_sessions


async def store_password_hash(session: AsyncSession, user_id: str, password_hash: str) -> None:
    stmt = pg_insert(user_credentials).values(user_id=user_id, password_hash=password_hash)
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id"], set_={"password_hash": stmt.excluded.password_hash, "changed_at": func.now()}
    )
    await session.execute(stmt)


async def password_hash(session: AsyncSession, user_id: str) -> str | None:
    return await session.scalar(select(user_credentials.c.password_hash).where(user_credentials.c.user_id == user_id))


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


async def recent_failures(
    session: AsyncSession, user_id: str, now: datetime, window: timedelta
) -> tuple[int, datetime | None]:
    """Failed sign-ins since the last success within the window, and the latest of them."""
    a = login_attempts.c
    last_ok = select(func.max(a.at)).where(a.user_id == user_id, a.ok).scalar_subquery()
    n, latest = (
        await session.execute(
            select(func.count(), func.max(a.at)).where(
                a.user_id == user_id,
                a.ok.is_(False),
                a.at > now - window,
                a.at > func.coalesce(last_ok, datetime(1970, 1, 1, tzinfo=UTC)),
            )
        )
    ).one()
    return n, latest


async def record_attempt(session: AsyncSession, user_id: str, client: str, ok: bool) -> None:
    await session.execute(login_attempts.insert().values(user_id=user_id, client=client, ok=ok))


async def insert_session(
    session: AsyncSession, *, token_hash: str, user_id: str, csrf_token: str, expires_at: datetime, assertion: dict
) -> None:
    await session.execute(
        web_sessions.insert().values(
            token_hash=token_hash, user_id=user_id, csrf_token=csrf_token, expires_at=expires_at, assertion=assertion
        )
    )


async def live_session(session: AsyncSession, token_hash: str):
    """The session row (user_id, csrf_token, assertion) for this token's hash, if not ended nor expired."""
    s = web_sessions.c
    return (
        await session.execute(
            select(s.user_id, s.csrf_token, s.assertion).where(
                s.token_hash == token_hash, s.ended_at.is_(None), s.expires_at > func.now()
            )
        )
    ).one_or_none()


async def end_session(session: AsyncSession, token_hash: str) -> None:
    await session.execute(
        update(web_sessions).where(web_sessions.c.token_hash == token_hash).values(ended_at=func.now())
    )


async def insert_token(session: AsyncSession, user_id: str, name: str, token_hash: str) -> None:
    """A new API token row; refused when the user already has a token of that name."""
    t = api_tokens.c
    taken = await session.scalar(select(t.id).where(t.user_id == user_id, t.name == name))
    if taken is not None:
        raise Refusal("TokenExists", f"user {user_id!r} already has a token named {name!r}; revoke it first")
    await session.execute(api_tokens.insert().values(user_id=user_id, name=name, token_hash=token_hash))


async def revoke_token(session: AsyncSession, user_id: str, name: str) -> None:
    t = api_tokens.c
    done = await session.execute(
        update(api_tokens)
        .where(t.user_id == user_id, t.name == name, t.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    if done.rowcount == 0:
        raise Refusal("UnknownToken", f"user {user_id!r} has no live token named {name!r}")


async def use_token(session: AsyncSession, token_hash: str):
    """The live token row (user_id, name, token_hash) for this hash, its last use stamped; None if unknown."""
    t = api_tokens.c
    return (
        await session.execute(
            update(api_tokens)
            .where(t.token_hash == token_hash, t.revoked_at.is_(None))
            .values(last_used_at=func.now())
            .returning(t.user_id, t.name, t.token_hash)
        )
    ).one_or_none()


async def admins_with_credentials(session: AsyncSession, role: str) -> list[str]:
    """Active users of `role` who can prove who they are (a password or a live token)."""
    u, c, t = users.c, user_credentials.c, api_tokens.c
    has_password = select(c.user_id).where(c.user_id == u.user_id).exists()
    has_token = select(t.id).where(t.user_id == u.user_id, t.revoked_at.is_(None)).exists()
    q = select(u.user_id).where(u.role == role, u.active, has_password | has_token).order_by(u.user_id)
    return list(await session.scalars(q))
