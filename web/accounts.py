"""`starter.py users …`: accounts for the web app and the API — add, disable, enable, reset, tokens.

A password is typed at a prompt (never on the command line, where `ps` and shell history would keep it),
read from standard input with `--password-stdin`, or generated with `--generate` and shown once.
"""

from __future__ import annotations

import secrets
import sys

import typer
from rich.table import Table
from sqlalchemy import select

from core.cli import database, fail, out, run
from core.errors import DomainError
from core.settings import Settings
from db import access
from db import users as users_db
from db.schema import api_tokens, user_credentials, users
from operations import sample

app = typer.Typer(no_args_is_help=True, help="Accounts for the web app and the API: add, disable, reset, tokens")

# The programme's roles: those the workflow policy names, and those that only read or manage.
ROLES = sorted({u["role"] for u in sample.users()})


def _password(generate: bool, from_stdin: bool, user_id: str) -> tuple[str, bool]:
    """(password, shown): generated ones are printed once, since nobody else knows them."""
    if generate:
        return secrets.token_urlsafe(12), True
    if from_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return typer.prompt(f"password for {user_id}", hide_input=True, confirmation_prompt=True), False


def _act(fn):
    """Run `fn(settings)`; a refusal ends the command with its rule and a non-zero exit."""
    try:
        return run(fn)
    except DomainError as e:
        fail(f"{e.type}: {e.message}")


GENERATE = typer.Option(False, "--generate", help="Generate a password and print it once")
STDIN = typer.Option(False, "--password-stdin", help="Read the password from standard input")


@app.command("add")
def add(
    user_id: str,
    name: str = typer.Option(..., "--name", help="Full name"),
    role: str = typer.Option(..., "--role", help=f"One of: {', '.join(ROLES)}"),
    agency: str = typer.Option(..., "--agency"),
    province: str = typer.Option(sample.PROVINCE, "--province"),
    district: str | None = typer.Option(None, "--district", help="Leave out for the whole province"),
    commune: str | None = typer.Option(None, "--commune", help="Leave out for the whole district"),
    generate: bool = GENERATE,
    password_stdin: bool = STDIN,
) -> None:
    """Register an officer with a role, an agency and a jurisdiction, and give them a password."""
    if role not in ROLES:
        fail(f"--role {role!r} is not a role of the programme; the roles are: {', '.join(ROLES)}")
    if commune and not district:
        fail("--commune needs --district: a commune is named within its district")
    password, shown = _password(generate, password_stdin, user_id)

    async def go(settings: Settings) -> None:
        async with database(settings) as sessions, sessions() as s, s.begin():
            if await users_db.get(s, user_id) is not None:
                raise DomainError("UserExists", f"user {user_id!r} is already registered (use 'users reset')")
            row = dict(user_id=user_id, full_name=name, role=role, agency=agency, province=province,
                       district=district, commune=commune, active=True)  # fmt: skip
            await users_db.upsert(s, [row])
            await access.set_password(s, user_id, password)

    _act(go)
    out.print(f"user {user_id} added: {role}, {agency}, {' / '.join(filter(None, (province, district, commune)))}")
    if shown:
        out.print(f"password (shown once): {password}")


@app.command("reset")
def reset(user_id: str, generate: bool = GENERATE, password_stdin: bool = STDIN) -> None:
    """Give a user a new password (their open sessions stay until they expire or the user is disabled)."""
    password, shown = _password(generate, password_stdin, user_id)

    async def go(settings: Settings) -> None:
        async with database(settings) as sessions, sessions() as s, s.begin():
            await access.set_password(s, user_id, password)

    _act(go)
    out.print(f"password of {user_id} reset" + (f" (shown once): {password}" if shown else ""))


@app.command("disable")
def disable(user_id: str) -> None:
    """Stop a user from signing in or acting: ends their sessions, revokes their API tokens. The engine
    refuses their steps too (it checks the users table inside every step's transaction)."""
    _set_active(user_id, False)


@app.command("enable")
def enable(user_id: str) -> None:
    """Let a disabled user sign in again (with a password reset if it was lost; tokens stay revoked)."""
    _set_active(user_id, True)


def _set_active(user_id: str, active: bool) -> None:
    async def go(settings: Settings) -> None:
        async with database(settings) as sessions, sessions() as s, s.begin():
            await access.set_active(s, user_id, active)

    _act(go)
    out.print(f"user {user_id} {'enabled' if active else 'disabled'}")


@app.command("token")
def token(user_id: str, name: str = typer.Option(..., "--name", help="What the token is for")) -> None:
    """Create an API token for a machine client acting as this user; it is printed once, stored hashed."""

    async def go(settings: Settings) -> str:
        async with database(settings) as sessions, sessions() as s, s.begin():
            return await access.create_token(s, user_id, name)

    value = _act(go)
    out.print(f"API token {name!r} for {user_id} (shown once; send as 'Authorization: Bearer …'):")
    print(value)


@app.command("revoke")
def revoke(user_id: str, name: str = typer.Option(..., "--name")) -> None:
    """Revoke an API token by its name."""

    async def go(settings: Settings) -> None:
        async with database(settings) as sessions, sessions() as s, s.begin():
            await access.revoke_token(s, user_id, name)

    _act(go)
    out.print(f"token {name!r} of {user_id} revoked")


@app.command("list")
def list_users() -> None:
    """Users, their role and jurisdiction, whether they can sign in, and their live API tokens."""

    async def go(settings: Settings):
        async with database(settings) as sessions, sessions() as s:
            rows = (await s.execute(select(users).order_by(users.c.role, users.c.user_id))).mappings().all()
            with_password = set(await s.scalars(select(user_credentials.c.user_id)))
            tokens = (await s.execute(select(api_tokens.c.user_id, api_tokens.c.name)
                                      .where(api_tokens.c.revoked_at.is_(None)))).all()  # fmt: skip
        return rows, with_password, tokens

    rows, with_password, tokens = run(go)
    table = Table("user", "name", "role", "jurisdiction", "active", "password", "API tokens", title="Users")
    for r in rows:
        names = ", ".join(n for u, n in tokens if u == r["user_id"])
        where = " / ".join(filter(None, (r["province"], r["district"], r["commune"])))
        table.add_row(r["user_id"], r["full_name"], r["role"], where, "yes" if r["active"] else "no",
                      "set" if r["user_id"] in with_password else "—", names)  # fmt: skip
    out.print(table)
