"""`starter.py users …`: accounts for the web app and the API — add, disable, enable, reset, tokens.

Every change is an administrator's: `--admin USER` with that administrator's password (prompted), API
token (`HOUSING_TOKEN`, or `--admin-token-stdin`) or password on standard input (`--admin-password-stdin`),
checked as every sign-in is (operations/credentials.py). Each change is recorded in the tamper-evident
trail `account_changes` (`users trail --verify` recomputes it). The very first administrator is set up
with `users bootstrap`, which works only while no administrator can sign in.

A password is typed at a prompt (never on the command line, where `ps` and shell history would keep it),
read from standard input with `--password-stdin` (the line after the administrator's credential, when that
is piped too), or generated with `--generate` and shown once.
"""

from __future__ import annotations

import secrets
import sys

import typer
from rich.table import Table
from sqlalchemy import select

from cli.command import database, fail, out, run
from core.errors import Refusal
from core.settings import Settings
from core.signing import SigningKeyError, load_ring
from db import access, signing_keys
from db import account_changes as trail
from db.schema import api_tokens, user_credentials, users
from operations import accounts, credentials, sample

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
    except Refusal as e:
        fail(str(e))
    except SigningKeyError as e:  # no front-door ring here: nothing changed, since no change goes unsigned
        fail(str(e))


GENERATE = typer.Option(False, "--generate", help="Generate a password and print it once")
STDIN = typer.Option(False, "--password-stdin", help="Read the password from standard input")
ADMIN = typer.Option(..., "--admin", help="The administrator making the change (their credential is asked)")
ADMIN_PASSWORD_STDIN = typer.Option(
    False, "--admin-password-stdin", help="Read the administrator's password from standard input (first line)"
)
ADMIN_TOKEN_STDIN = typer.Option(
    False,
    "--admin-token-stdin",
    help="Read the administrator's API token from standard input (first line); or set HOUSING_TOKEN",
)


def _administrator(admin: str, password_stdin: bool, token_stdin: bool) -> str:
    """The proved administrator's user id; anyone else is refused before anything is asked or changed."""
    who = credentials.sign_in(
        admin,
        password_stdin=password_stdin,
        token_stdin=token_stdin,
        roles=(access.ACCOUNT_ADMIN_ROLE,),
        what="administer accounts",
    )
    return who.user_id


def _change(fn, *args):
    """Run `fn(session, *args)` in one transaction (the change and its trail row commit together), its trail
    row signed by this front door's ring (the command line that proved the administrator)."""

    async def go(settings: Settings):
        signer = load_ring(settings)
        async with database(settings) as sessions, sessions() as s, s.begin():
            return await fn(s, *args, signer=signer)

    return _act(go)


def _row(
    user_id: str, name: str, role: str, agency: str, province: str, district: str | None, commune: str | None
) -> dict:
    if commune and not district:
        fail("--commune needs --district: a commune is named within its district")
    return dict(
        user_id=user_id, full_name=name, role=role, agency=agency, province=province, district=district, commune=commune
    )


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
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Register an officer with a role, an agency and a jurisdiction, and give them a password."""
    if role not in ROLES:
        fail(f"--role {role!r} is not a role of the programme; the roles are: {', '.join(ROLES)}")
    row = _row(user_id, name, role, agency, province, district, commune)
    by = _administrator(admin, admin_password_stdin, admin_token_stdin)
    password, shown = _password(generate, password_stdin, user_id)
    _change(accounts.add_user, by, row, password)
    out.print(
        f"user {user_id} added by {by}: {role}, {agency}, {' / '.join(filter(None, (province, district, commune)))}"
    )
    if shown:
        out.print(f"password (shown once): {password}")


@app.command("bootstrap")
def bootstrap(
    user_id: str,
    name: str | None = typer.Option(None, "--name", help="Full name (when the user is not registered yet)"),
    agency: str | None = typer.Option(None, "--agency", help="Agency (when the user is not registered yet)"),
    province: str = typer.Option(sample.PROVINCE, "--province"),
    generate: bool = GENERATE,
    password_stdin: bool = STDIN,
) -> None:
    """Set up the first administrator's password (registering them as admin if needed). Refused as soon as
    any active administrator can sign in: from then on, accounts are changed by an administrator."""
    row = None
    if name or agency:
        if not (name and agency):
            fail("a new administrator needs both --name and --agency")
        row = _row(user_id, name, access.ACCOUNT_ADMIN_ROLE, agency, province, None, None)
    password, shown = _password(generate, password_stdin, user_id)
    _change(accounts.bootstrap, user_id, password, row)
    out.print(
        f"first administrator {user_id} set up (recorded in the trail as bootstrap)"
        + (f"; password (shown once): {password}" if shown else "")
    )


@app.command("reset")
def reset(
    user_id: str,
    generate: bool = GENERATE,
    password_stdin: bool = STDIN,
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Give a user a new password (their open sessions stay until they expire or the user is disabled)."""
    by = _administrator(admin, admin_password_stdin, admin_token_stdin)
    password, shown = _password(generate, password_stdin, user_id)
    _change(accounts.reset_password, by, user_id, password)
    out.print(f"password of {user_id} reset by {by}" + (f" (shown once): {password}" if shown else ""))


@app.command("disable")
def disable(
    user_id: str,
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Stop a user from signing in or acting: ends their sessions, revokes their API tokens. The engine
    refuses their steps too (it checks the users table inside every step's transaction)."""
    _set_active(user_id, False, _administrator(admin, admin_password_stdin, admin_token_stdin))


@app.command("enable")
def enable(
    user_id: str,
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Let a disabled user sign in again (with a password reset if it was lost; tokens stay revoked)."""
    _set_active(user_id, True, _administrator(admin, admin_password_stdin, admin_token_stdin))


def _set_active(user_id: str, active: bool, by: str) -> None:
    _change(accounts.set_active, by, user_id, active)
    out.print(f"user {user_id} {'enabled' if active else 'disabled'} by {by}")


@app.command("token")
def token(
    user_id: str,
    name: str = typer.Option(..., "--name", help="What the token is for"),
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Create an API token for a machine client acting as this user; it is printed once, stored hashed."""
    by = _administrator(admin, admin_password_stdin, admin_token_stdin)
    value = _change(accounts.issue_token, by, user_id, name)
    out.print(
        f"API token {name!r} for {user_id} (shown once; send as 'Authorization: Bearer …', or set "
        "HOUSING_TOKEN for starter.py):"
    )
    print(value)


@app.command("revoke")
def revoke(
    user_id: str,
    name: str = typer.Option(..., "--name"),
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Revoke an API token by its name."""
    by = _administrator(admin, admin_password_stdin, admin_token_stdin)
    _change(accounts.revoke_token, by, user_id, name)
    out.print(f"token {name!r} of {user_id} revoked by {by}")


@app.command("trail")
def show_trail(
    user_id: str | None = typer.Argument(None, help="Only this user's changes (the whole chain is verified)"),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Recompute the hash chain and check each row's signature; exit 1 naming the first broken row",
    ),
) -> None:
    """Every account change: when, by whom, what, on whom (never a secret). With --verify, the chain is
    recomputed from the first row and each row's front-door signature checked against `signing_keys`: an
    edited, removed, reordered or unsigned (forged) row is named."""

    async def go(settings: Settings):
        async with database(settings) as sessions, sessions() as s:
            return await trail.read(s), await signing_keys.load(s)

    rows, keys = run(go)
    shown = [r for r in rows if user_id is None or r.user_id == user_id]
    table = Table("#", "when (UTC)", "by", "action", "user", "details", "hash", title="Account changes")
    for r in shown:
        details = ", ".join(f"{k}={v}" for k, v in sorted(r.details.items()))
        table.add_row(
            str(r.id), f"{r.at:%Y-%m-%d %H:%M:%S}", r.by_user, r.action, r.user_id, details, r.hash[:16] + "…"
        )
    out.print(table)
    if not verify:
        return
    checked = trail.verify_rows(rows, keys)
    if not checked.ok:
        b = checked.first_break
        fail(
            f"account trail broken at row {b.id} ({b.action} of {b.user_id} by {b.by_user}, "
            f"{b.at:%Y-%m-%d %H:%M:%S}): {checked.reason}"
        )
    out.print(f"account trail verified: {checked.rows} rows, chain unbroken, each signed by a front door")


@app.command("list")
def list_users() -> None:
    """Users, their role and jurisdiction, whether they can sign in, and their live API tokens."""

    async def go(settings: Settings):
        async with database(settings) as sessions, sessions() as s:
            rows = (await s.execute(select(users).order_by(users.c.role, users.c.user_id))).mappings().all()
            with_password = set(await s.scalars(select(user_credentials.c.user_id)))
            tokens = (
                await s.execute(
                    select(api_tokens.c.user_id, api_tokens.c.name).where(api_tokens.c.revoked_at.is_(None))
                )
            ).all()
        return rows, with_password, tokens

    rows, with_password, tokens = run(go)
    table = Table("user", "name", "role", "jurisdiction", "active", "password", "API tokens", title="Users")
    for r in rows:
        names = ", ".join(n for u, n in tokens if u == r["user_id"])
        where = " / ".join(filter(None, (r["province"], r["district"], r["commune"])))
        table.add_row(
            r["user_id"],
            r["full_name"],
            r["role"],
            where,
            "yes" if r["active"] else "no",
            "set" if r["user_id"] in with_password else "—",
            names,
        )
    out.print(table)
