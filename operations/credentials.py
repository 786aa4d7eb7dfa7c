"""Who is at the command line: a command run `--as USER` (or `--admin USER`) acts as that user only once
the person has proved to be them, with the user's password or one of their API tokens.

Where the credential comes from, first match wins: `--token-stdin` / `--password-stdin` (one line on
standard input, for pipes), the environment's `HOUSING_TOKEN` (for scripts), else a password prompt at a
terminal (never echoed). Off a terminal with none of these, the command is refused rather than left waiting.
The check is the web app's (db/access.py): the same argon2 passwords, the same throttling of wrong
passwords per user name (each attempt recorded), the same tokens; the user must be active, and the password
or token must have been set through account administration (its signed row in the account trail names
exactly the stored hash: one written into the database by other means is refused). A token proves only its
own user: `--as` someone else with it is refused.

The command line then signs the user's steps with the front door's ring (core/signing.py): the engine
takes nothing from it that was not proved here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal

import typer

from cli.command import database, fail, run
from core.errors import Refusal
from core.settings import Settings, get_settings
from db import access
from db.engine import Sessions
from db.users import User

RULE = "Unauthenticated"
CLIENT = "command line"  # how the command line's password attempts are named in login_attempts

PASSWORD_STDIN = typer.Option(False, "--password-stdin", help="Read your password from standard input (one line)")
TOKEN_STDIN = typer.Option(
    False, "--token-stdin", help="Read your API token from standard input (one line); or set HOUSING_TOKEN"
)


class Unauthenticated(Refusal):
    def __init__(self, message: str) -> None:
        super().__init__(RULE, message)


@dataclass(frozen=True)
class Credential:
    kind: Literal["password", "token"]
    secret: str = field(repr=False)


def _prompt(label: str) -> str:
    return typer.prompt(label, hide_input=True)


def from_command_line(
    user_id: str,
    *,
    password_stdin: bool = False,
    token_stdin: bool = False,
    env_token: str = "",
    interactive: bool | None = None,
    prompt: Callable[[str], str] = _prompt,
) -> Credential:
    """The credential offered for `user_id` (read, not checked)."""
    if password_stdin and token_stdin:
        raise Unauthenticated("give --password-stdin or --token-stdin, not both")
    if token_stdin or password_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            raise Unauthenticated(f"nothing on standard input: expected {'a token' if token_stdin else 'a password'}")
        return Credential("token" if token_stdin else "password", secret)
    if env_token:
        return Credential("token", env_token.strip())
    if interactive if interactive is not None else sys.stdin.isatty():
        return Credential("password", prompt(f"password for {user_id}"))
    raise Unauthenticated(
        f"no credential for {user_id!r}: type the password at a terminal, set HOUSING_TOKEN, or "
        "pipe it with --password-stdin / --token-stdin"
    )


async def authenticate(sessions: Sessions, user_id: str, credential: Credential, *, client: str = CLIENT) -> User:
    """The active user `user_id`, once the credential proves it is them; else `Unauthenticated`. A password
    attempt is recorded (and counts toward the lock on the name) whatever the outcome."""
    refusal: str | None = None
    user: User | None = None
    async with sessions() as s, s.begin():  # committed also on a refusal: the attempt stays recorded
        if credential.kind == "token":
            checked = await access.check_token(s, credential.secret)
            if checked.refusal is None and checked.who.user.user_id != user_id:
                refusal = f"the API token is {checked.who.user.user_id!r}'s: it cannot act as {user_id!r}"
        else:
            checked = await access.check_password(s, user_id, credential.secret, client)
        if checked.refusal is not None:
            refusal = checked.refusal.message
        elif refusal is None:
            user = checked.who.user
    if refusal is not None:
        raise Unauthenticated(refusal)
    return user


def require_role(user: User, roles: Collection[str], what: str) -> None:
    if user.role not in roles:
        raise Refusal("NotAllowed", f"{user.user_id!r} is {user.role}: to {what} takes {' or '.join(roles)}")


async def sign_in_async(
    settings: Settings, user_id: str, credential: Credential, *, roles: Collection[str] | None = None, what: str = ""
) -> User:
    async with database(settings) as sessions:
        user = await authenticate(sessions, user_id, credential)
    if roles is not None:
        require_role(user, roles, what)
    return user


def sign_in(
    user_id: str,
    *,
    password_stdin: bool = False,
    token_stdin: bool = False,
    roles: Collection[str] | None = None,
    what: str = "",
) -> User:
    """For a command: the proved user `user_id` (with one of `roles`, when given), or the command ends here
    with the refusal and a non-zero exit, having done nothing."""
    settings = get_settings()
    try:
        credential = from_command_line(
            user_id, password_stdin=password_stdin, token_stdin=token_stdin, env_token=settings.housing_token
        )
        return run(sign_in_async, user_id, credential, roles=roles, what=what)
    except Refusal as e:
        fail(str(e))
        raise  # unreachable: fail() exits
