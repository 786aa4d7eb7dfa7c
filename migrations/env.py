"""Alembic environment: runs migrations over asyncpg against DATABASE_OWNER_URL (or the URL a caller passes)."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from core.settings import get_settings

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


# As the schema owner (DATABASE_OWNER_URL); the application's role (DATABASE_URL's user) is what 0007 and
# later migrations grant to (migrations/privileges.py).
url = config.attributes.get("url") or get_settings().owner_asyncpg_url
config.attributes.setdefault("app_role", get_settings().app_role)
if context.is_offline_mode():
    context.configure(url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_main(url))
