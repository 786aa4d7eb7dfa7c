"""What every command-line module shares: the consoles, running a command's coroutine with the settings,
a database for the command's lifetime, and refusing with a message and a non-zero exit."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import typer
from rich.console import Console

from core.errors import Refusal
from core.logs import configure_logging
from core.settings import Settings, get_settings
from db.engine import Sessions, make_engine, make_sessions

# Off a terminal (CI logs, pipes) rich would assume 80 columns and squeeze the tables.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
T = TypeVar("T")


def run(fn: Callable[..., Awaitable[T]], *args, **kwargs) -> T:
    """Run `fn(settings, *args, **kwargs)`; logs quiet (warnings) unless LOG_LEVEL is set."""
    settings = get_settings()
    configure_logging(settings.log_level if settings.explicitly_set("log_level") else "WARNING", settings.log_json)
    try:
        return asyncio.run(fn(settings, *args, **kwargs))
    except Refusal as err:  # a business refusal a command did not handle itself: named, not a traceback
        fail(str(err))


@asynccontextmanager
async def database(settings: Settings, *, url: str | None = None) -> AsyncIterator[Sessions]:
    """Sessions for the command's lifetime, as the application's login unless `url` names another."""
    engine = make_engine(settings, url=url)
    try:
        yield make_sessions(engine)
    finally:
        await engine.dispose()


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]refused[/]: {message}")
    raise typer.Exit(code)
