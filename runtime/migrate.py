"""Apply the Alembic migrations (the same ones in tests, the demo and production), as the schema owner
(DATABASE_OWNER_URL), granting the application's role (DATABASE_URL's user) what it needs (0007)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from core.settings import ROOT, Settings


def alembic_config(url: str | None = None, app_role: str | None = None) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    if url:
        cfg.attributes["url"] = url
    if app_role:
        cfg.attributes["app_role"] = app_role
    return cfg


def upgrade(url: str | None = None, revision: str = "head", *, app_role: str | None = None) -> None:
    """Blocking: runs its own event loop. From async code, call it through asyncio.to_thread. `url` is the
    owner's; `app_role` the role granted to (default: the configured DATABASE_URL's user)."""
    command.upgrade(alembic_config(url, app_role), revision)


def migrate(settings: Settings, revision: str = "head") -> None:
    """Upgrade as the settings' owner, granting to the settings' application role."""
    upgrade(settings.owner_asyncpg_url, revision, app_role=settings.app_role)
