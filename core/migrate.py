"""Apply the Alembic migrations (the same ones in tests, the demo and production)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from core.settings import ROOT


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    if url:
        cfg.attributes["url"] = url
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Blocking: runs its own event loop. From async code, call it through asyncio.to_thread."""
    command.upgrade(alembic_config(url), revision)
