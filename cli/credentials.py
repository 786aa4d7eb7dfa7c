"""Who is at the command line: a command run `--as USER` (or `--admin USER`) acts as that user only once the
person has proved to be them, with the user's password or one of their API tokens (checked by
operations/credentials.py, as the web app checks them).

Where the credential comes from, first match wins: `--token-stdin` / `--password-stdin` (one line on
standard input, for pipes), the environment's `HOUSING_TOKEN` (for scripts), else a password prompt at a
terminal (never echoed). Off a terminal with none of these, the command is refused rather than left waiting.
The command line then signs the user's steps with the front door's ring (core/signing.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection

import typer

from cli.command import database
from core.settings import Settings
from db.users import User
from operations.credentials import Credential, Unauthenticated, authenticate, require_role

PASSWORD_STDIN = typer.Option(False, "--password-stdin", help="Read your password from standard input (one line)")
TOKEN_STDIN = typer.Option(
    False, "--token-stdin", help="Read your API token from standard input (one line); or set HOUSING_TOKEN"
)


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


async def sign_in(
    settings: Settings,
    user_id: str,
    *,
    password_stdin: bool = False,
    token_stdin: bool = False,
    roles: Collection[str] | None = None,
    what: str = "",
) -> User:
    """The proved user `user_id` (with one of `roles`, when given); else a refusal, which ends the command
    (cli/command.py) before it has done anything."""
    credential = from_command_line(
        user_id, password_stdin=password_stdin, token_stdin=token_stdin, env_token=settings.housing_token
    )
    async with database(settings) as sessions:
        user = await authenticate(sessions, user_id, credential)
    if roles is not None:
        require_role(user, roles, what)
    return user
