"""The command line's root: every group's sub-app mounted under its name, the households', the service's,
the report's and the demo's commands at the top.

    python starter.py stack up|down|status|env
    python starter.py import FILE --as USER
    python starter.py act CODE STEP --as USER [--evidence REF]... [--reason TEXT] [--source CODE]
                                   [--tranche N] [--milestone M]
    python starter.py status CODE [--json]
    python starter.py list [--stage S] [--district D] [--json]
    python starter.py report [--json] [--csv DIR] [--xlsx FILE]
    python starter.py finance sources|source-add|receive|batch|decision-add|loan|reimburse
    python starter.py audit export DIR | replay [--from DIR] | timeline CODE [--lang en] [--json] | verify | chain
    python starter.py keys new|rotate|list|match-key
    python starter.py registry import FILE --programme CODE|report [--xlsx FILE]|export-keys --out FILE|key-households
    python starter.py users add|reset|disable|enable|token|revoke --admin USER | bootstrap | trail [--verify] | list
    python starter.py web [--port N]
    python starter.py demo

Every `--as USER` (and `--admin USER`) is proved: the user's password (asked, or `--password-stdin`) or API
token (HOUSING_TOKEN, or `--token-stdin`); see cli/credentials.py.
"""

from __future__ import annotations

import sys

import typer

from cli import (
    archive,
    audit,
    demo,
    finance,
    households,
    keys,
    policy,
    receipts,
    reform,
    registry,
    reports,
    service,
    stack,
    users,
)
from cli.command import err
from core.codec import PayloadKeyError
from runtime.stack import StackError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Housing-support programme engine")
app.add_typer(service.app)  # migrate, seed-demo, notify-drain, web
app.add_typer(households.app)  # import, act, status, list
app.add_typer(reports.app)  # report
app.add_typer(demo.app)  # demo
app.add_typer(finance.app, name="finance")
app.add_typer(stack.app, name="stack")
app.add_typer(audit.app, name="audit")
app.add_typer(archive.app, name="archive")
app.add_typer(policy.app, name="policy")
app.add_typer(keys.app, name="keys")
app.add_typer(users.app, name="users")
app.add_typer(reform.app, name="reform")
app.add_typer(registry.app, name="registry")
app.add_typer(receipts.app, name="receipts")
app.add_typer(receipts.grievances_app, name="grievances")


def main() -> None:
    """Run the command line; a stack that cannot start or a payload key ring that cannot be read is named,
    with exit 1, rather than shown as a traceback."""
    try:
        app()
    except StackError as e:
        err.print(f"[bold red]stack[/]: {e}")
        sys.exit(1)
    except PayloadKeyError as e:
        err.print(f"[bold red]payload keys[/]: {e}")
        sys.exit(1)
