"""`starter.py users …`: accounts for the web app and the API — add, disable, enable, reset, tokens.

Every change is an administrator's: `--admin USER` with that administrator's password (prompted), API
token (`HOUSING_TOKEN`, or `--admin-token-stdin`) or password on standard input (`--admin-password-stdin`),
checked as every sign-in is (cli/credentials.py). Each change is recorded in the tamper-evident trail
`account_changes` (`users trail --verify` recomputes it). The very first administrator is set up
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

from cli.command import command, database, fail, out
from cli.credentials import sign_in
from core.formatting import moment
from core.settings import Settings
from core.signing import SigningKeyError, load_ring
from db import account_changes as trail
from db import signing_keys
from db import users as users_db
from models.actor import ACCOUNT_ADMIN_ROLE, ROLES
from operations import accounts, sample

app = typer.Typer(no_args_is_help=True, help="Accounts for the web app and the API: add, disable, reset, tokens")
# A command with no front-door ring (SigningKeyError) changes nothing: no account change goes unsigned.
changes = command(refuses=(SigningKeyError,))


def _password(generate: bool, from_stdin: bool, user_id: str) -> tuple[str, bool]:
    """(password, shown): generated ones are printed once, since nobody else knows them."""
    if generate:
        return secrets.token_urlsafe(12), True
    if from_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return typer.prompt(f"password for {user_id}", hide_input=True, confirmation_prompt=True), False


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


async def _administrator(settings: Settings, admin: str, password_stdin: bool, token_stdin: bool) -> str:
    """The proved administrator's user id; anyone else is refused before anything is asked or changed."""
    who = await sign_in(
        settings,
        admin,
        password_stdin=password_stdin,
        token_stdin=token_stdin,
        roles=(ACCOUNT_ADMIN_ROLE,),
        what="administer accounts",
    )
    return who.user_id


async def _change(settings: Settings, fn, *args):
    """`fn(session, *args)` in one transaction (the change and its trail row commit together), its trail row
    signed by this front door's ring (the command line that proved the administrator)."""
    signer = load_ring(settings)
    async with database(settings) as sessions, sessions() as s, s.begin():
        return await fn(s, *args, signer=signer)


def _row(
    user_id: str, name: str, role: str, agency: str, province: str, district: str | None, commune: str | None
) -> dict:
    if commune and not district:
        fail("--commune needs --district: a commune is named within its district")
    return dict(
        user_id=user_id, full_name=name, role=role, agency=agency, province=province, district=district, commune=commune
    )


@app.command("add")
@changes
async def add(
    settings: Settings,
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
    by = await _administrator(settings, admin, admin_password_stdin, admin_token_stdin)
    password, shown = _password(generate, password_stdin, user_id)
    await _change(settings, accounts.add_user, by, row, password)
    out.print(
        f"user {user_id} added by {by}: {role}, {agency}, {' / '.join(filter(None, (province, district, commune)))}"
    )
    if shown:
        out.print(f"password (shown once): {password}")


@app.command("bootstrap")
@changes
async def bootstrap(
    settings: Settings,
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
        row = _row(user_id, name, ACCOUNT_ADMIN_ROLE, agency, province, None, None)
    password, shown = _password(generate, password_stdin, user_id)
    await _change(settings, accounts.bootstrap, user_id, password, row)
    out.print(
        f"first administrator {user_id} set up (recorded in the trail as bootstrap)"
        + (f"; password (shown once): {password}" if shown else "")
    )


@app.command("reset")
@changes
async def reset(
    settings: Settings,
    user_id: str,
    generate: bool = GENERATE,
    password_stdin: bool = STDIN,
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Give a user a new password (their open sessions stay until they expire or the user is disabled)."""
    by = await _administrator(settings, admin, admin_password_stdin, admin_token_stdin)
    password, shown = _password(generate, password_stdin, user_id)
    await _change(settings, accounts.reset_password, by, user_id, password)
    out.print(f"password of {user_id} reset by {by}" + (f" (shown once): {password}" if shown else ""))


@app.command("disable")
@changes
async def disable(
    settings: Settings,
    user_id: str,
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Stop a user from signing in or acting: ends their sessions, revokes their API tokens. The engine
    refuses their steps too (it checks the users table inside every step's transaction)."""
    await _set_active(
        settings, user_id, False, await _administrator(settings, admin, admin_password_stdin, admin_token_stdin)
    )


@app.command("enable")
@changes
async def enable(
    settings: Settings,
    user_id: str,
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Let a disabled user sign in again (with a password reset if it was lost; tokens stay revoked)."""
    await _set_active(
        settings, user_id, True, await _administrator(settings, admin, admin_password_stdin, admin_token_stdin)
    )


async def _set_active(settings: Settings, user_id: str, active: bool, by: str) -> None:
    await _change(settings, accounts.set_active, by, user_id, active)
    out.print(f"user {user_id} {'enabled' if active else 'disabled'} by {by}")


@app.command("token")
@changes
async def token(
    settings: Settings,
    user_id: str,
    name: str = typer.Option(..., "--name", help="What the token is for"),
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Create an API token for a machine client acting as this user; it is printed once, stored hashed."""
    by = await _administrator(settings, admin, admin_password_stdin, admin_token_stdin)
    value = await _change(settings, accounts.issue_token, by, user_id, name)
    out.print(
        f"API token {name!r} for {user_id} (shown once; send as 'Authorization: Bearer …', or set "
        "HOUSING_TOKEN for starter.py):"
    )
    print(value)


@app.command("revoke")
@changes
async def revoke(
    settings: Settings,
    user_id: str,
    name: str = typer.Option(..., "--name"),
    admin: str = ADMIN,
    admin_password_stdin: bool = ADMIN_PASSWORD_STDIN,
    admin_token_stdin: bool = ADMIN_TOKEN_STDIN,
) -> None:
    """Revoke an API token by its name."""
    by = await _administrator(settings, admin, admin_password_stdin, admin_token_stdin)
    await _change(settings, accounts.revoke_token, by, user_id, name)
    out.print(f"token {name!r} of {user_id} revoked by {by}")


@app.command("trail")
@command
async def show_trail(
    settings: Settings,
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
    async with database(settings) as sessions, sessions() as s:
        rows, keys = await trail.read(s), await signing_keys.load(s)
    shown = [r for r in rows if user_id is None or r.user_id == user_id]
    table = Table("#", "when (UTC+7)", "by", "action", "user", "details", "hash", title="Account changes")
    for r in shown:
        details = ", ".join(f"{k}={v}" for k, v in sorted(r.details.items()))
        table.add_row(str(r.id), moment(r.at, seconds=True), r.by_user, r.action, r.user_id, details, r.hash[:16] + "…")
    out.print(table)
    if not verify:
        return
    checked = trail.verify_rows(rows, keys)
    if not checked.ok:
        b = checked.first_break
        fail(
            f"account trail broken at row {b.id} ({b.action} of {b.user_id} by {b.by_user}, "
            f"{moment(b.at, seconds=True)}): {checked.reason}"
        )
    out.print(f"account trail verified: {checked.rows} rows, chain unbroken, each signed by a front door")


@app.command("list")
@command
async def list_users(settings: Settings) -> None:
    """Users, their role and jurisdiction, whether they can sign in, and their live API tokens."""
    async with database(settings) as sessions, sessions() as s:
        listed = await users_db.accounts(s)
    table = Table("user", "name", "role", "jurisdiction", "active", "password", "API tokens", title="Users")
    for a in listed:
        table.add_row(
            a.user.user_id,
            a.user.full_name,
            a.user.role,
            str(a.user.jurisdiction),
            "yes" if a.user.active else "no",
            "set" if a.password_set else "—",
            ", ".join(a.tokens),
        )
    out.print(table)
