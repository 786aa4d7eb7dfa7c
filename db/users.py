"""Officers and their roles, agencies and jurisdictions."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Refusal
from db.schema import api_tokens, user_credentials, users
from models.actor import Actor, Jurisdiction


@dataclass(frozen=True)
class User:
    user_id: str
    full_name: str
    role: str
    agency: str
    province: str
    district: str | None
    commune: str | None
    active: bool

    @property
    def jurisdiction(self) -> Jurisdiction:
        return Jurisdiction(province=self.province, district=self.district, commune=self.commune)

    def actor(self) -> Actor:
        return Actor(user_id=self.user_id, role=self.role, agency=self.agency, jurisdiction=self.jurisdiction)


async def get(session: AsyncSession, user_id: str) -> User | None:
    row = (await session.execute(select(users).where(users.c.user_id == user_id))).one_or_none()
    if row is None:
        return None
    m = row._mapping
    return User(**{k: m[k] for k in User.__dataclass_fields__})


async def require_actor(session: AsyncSession, user_id: str) -> Actor:
    """The actor for an active user, or a refusal naming the user."""
    user = await get(session, user_id)
    if user is None:
        raise Refusal("UnknownUser", f"user {user_id!r} is not registered")
    if not user.active:
        raise Refusal("UserDisabled", f"user {user_id!r} is disabled")
    return user.actor()


async def confirm_actor(session: AsyncSession, actor: Actor) -> None:
    """Refuse an action whose actor does not match the users table now (role or jurisdiction changed)."""
    current = await require_actor(session, actor.user_id)
    if current != actor:
        raise Refusal(
            "ActorMismatch",
            f"user {actor.user_id!r} acted as {actor.role} of {actor.jurisdiction}, but the users table says "
            f"{current.role} of {current.jurisdiction}",
        )


async def upsert(session: AsyncSession, rows: list[dict]) -> int:
    if not rows:
        return 0
    stmt = pg_insert(users).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id"],
        set_={
            c: stmt.excluded[c] for c in ("full_name", "role", "agency", "province", "district", "commune", "active")
        },
    )
    await session.execute(stmt)
    return len(rows)


@dataclass(frozen=True)
class Account:
    """A user as account administration lists them: whether a password is set, the names of their live tokens."""

    user: User
    password_set: bool
    tokens: tuple[str, ...]


async def accounts(session: AsyncSession) -> list[Account]:
    """Every user, by role then user id, with their credentials' state (never a secret or a hash)."""
    rows = (await session.execute(select(users).order_by(users.c.role, users.c.user_id))).mappings().all()
    with_password = set(await session.scalars(select(user_credentials.c.user_id)))
    live = (
        await session.execute(
            select(api_tokens.c.user_id, api_tokens.c.name)
            .where(api_tokens.c.revoked_at.is_(None))
            .order_by(api_tokens.c.id)
        )
    ).all()
    return [
        Account(
            user=User(**{k: r[k] for k in User.__dataclass_fields__}),
            password_set=r["user_id"] in with_password,
            tokens=tuple(name for user_id, name in live if user_id == r["user_id"]),
        )
        for r in rows
    ]
