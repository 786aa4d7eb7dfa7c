"""What every command-line module shares: the consoles, running a command's coroutine with the settings,
a database for the command's lifetime, and refusing with a message and a non-zero exit.

A command is a coroutine taking the settings first, then its Typer parameters; `@command` runs it:

    @app.command("receive")
    @command
    async def receive(settings: Settings, source: str, amount: str = typer.Argument(...)) -> None:
        ...

A `core.errors.Refusal` it does not handle itself ends the command with `refused: Rule: message` on standard
error and exit 1 (`run`); `refuses=(SomeError, …)` names the other errors that end it the same way. A
command that wants another exit code raises `typer.Exit(code)` itself (an import's rejected list: 2)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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


def command(fn: Callable[..., Awaitable[Any]] | None = None, *, refuses: tuple[type[BaseException], ...] = ()) -> Any:
    """The command `fn(settings, …)` as Typer calls it: with the settings, in an event loop (`run`), a refusal
    (or one of `refuses`) turned into its message and exit 1. Typer reads the parameters after `settings`:
    the wrapper's signature is `fn`'s without its first."""

    def decorate(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        signature = inspect.signature(fn, eval_str=True)
        first, *params = signature.parameters.values()
        if first.name != "settings":
            raise TypeError(f"{fn.__qualname__}: a command takes the settings first")

        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any) -> Any:
            try:
                return run(fn, *args, **kwargs)
            except refuses as e:
                fail(str(e))

        # functools.wraps points __wrapped__ at fn, whose signature starts with `settings`; this one does not.
        body.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return body

    return decorate(fn) if fn is not None else decorate


def progress(*, console: Console | None = None, transient: bool = False) -> Progress:
    """A progress bar with a count and the time elapsed, on standard output unless `console` says otherwise."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or out,
        transient=transient,
    )
