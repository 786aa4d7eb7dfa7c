"""Engine and session maker. Sessions never expire loaded objects on commit and never lazy-load."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from core.settings import Settings

# Callers outside db/ name these through db.engine, so only db/ imports sqlalchemy.
Session = AsyncSession
Engine = AsyncEngine
Sessions = async_sessionmaker[AsyncSession]

__all__ = ["Engine", "IntegrityError", "Session", "Sessions", "make_engine", "make_sessions", "make_url"]


def make_engine(settings: Settings, *, url: str | None = None) -> AsyncEngine:
    return create_async_engine(
        url or settings.asyncpg_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=settings.db_pre_ping,
    )


def make_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)
