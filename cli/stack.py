"""`starter.py stack …`: the embedded stack (PostgreSQL, the Temporal dev server, the simulated bank, the
workers and the web app), started and stopped as processes of their own, and their settings for a shell."""

from __future__ import annotations

import os
import sys

import typer
from rich.table import Table

from cli.archive import print_status, read_status
from cli.command import err, out, run
from core.settings import get_settings
from runtime.stack import Stack, StackError
from runtime.up import bring_up

app = typer.Typer(no_args_is_help=True, help="The embedded stack: PostgreSQL, Temporal dev server, worker")


@app.command("up")
def stack_up(worker: bool = typer.Option(True, help="Also start a background worker")) -> None:
    """Start what is not running yet (PostgreSQL, Temporal, the worker) and apply migrations."""
    settings = get_settings()
    stack = Stack(settings)
    code = 0
    try:
        start(stack, worker)
        if down := stack.down(with_processes=worker):
            err.print(f"[bold red]refused[/]: not running after start: {', '.join(down)}")
            code = 1
    except StackError as e:
        err.print(f"[bold red]refused[/]: {e}")
        code = 1
    except Exception as e:  # a migration or the Temporal client failed: say so, with a non-zero exit
        err.print(f"[bold red]failed[/]: {type(e).__name__}: {e}")
        code = 1
    # Leave without interpreter shutdown: the Temporal client's runtime threads may still call into Python
    # while it finalises, and abort the process (SIGABRT) after every piece had started. The pieces are
    # processes of their own; nothing here needs finalising.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start(stack: Stack, worker: bool) -> None:
    """Start every piece not running yet, saying what each is doing (`stack up`, and the demo's first part)."""
    for line in bring_up(stack, worker):
        out.print(line)


@app.command("down")
def stack_down() -> None:
    """Stop the worker, Temporal and PostgreSQL started by 'stack up' (their data is kept)."""
    stack = Stack(get_settings())
    out.print(f"Web app     {'stopped' if stack.web().stop() else 'was not running'}")
    workers = stack.running_workers()
    for each in workers:
        each.stop()
    out.print(f"Worker      {f'{len(workers)} stopped' if workers else 'was not running'}")
    if stack.embedded_bank:
        out.print(f"Bank        {'stopped' if stack.bank().stop() else 'was not running'}")
    if stack.embedded_temporal:
        out.print(f"Temporal    {'stopped' if stack.temporal().stop() else 'was not running'}")
    if stack.embedded_db:
        out.print(f"PostgreSQL  {'stopped' if stack.postgres().stop() else 'was not running'}")


@app.command("status")
def stack_status() -> None:
    stack = Stack(get_settings())
    table = Table("part", "where", "state")
    pieces = stack.pieces()
    for piece in pieces:
        table.add_row(piece.name, piece.where, piece.state)
    table.add_row("Web UI", stack.settings.temporal_ui_url, "")
    out.print(table)
    if not [p for p in pieces if p.name in ("PostgreSQL", "Temporal") and p.state == "stopped"]:
        try:
            got = run(read_status)
        except Exception as e:  # noqa: BLE001 (the pieces' own rows say what is down)
            err.print(f"archive: not read ({type(e).__name__}: {e})")
        else:
            print_status(got)
    if down := [p.name for p in pieces if p.state == "stopped"]:
        err.print(f"down: {', '.join(down)}")
        raise typer.Exit(1)


@app.command("env")
def stack_env() -> None:
    """Shell-exportable settings, for the temporal CLI and psql: eval "$(python starter.py stack env)"."""
    for key, value in Stack(get_settings()).env().items():
        print(f"export {key}={value}")
