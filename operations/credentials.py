"""Proving who a person is, for the command line: a command run `--as USER` (or `--admin USER`) acts as that
user only once the person has proved to be them, with the user's password or one of their API tokens.

Reading the credential (standard input, `HOUSING_TOKEN`, a prompt) is the command line's (cli/credentials.py);
the check is here, and it is the web app's (operations/access.py): the same argon2 passwords, the same throttling of
wrong passwords per user name (each attempt recorded), the same tokens; the user must be active, and the
password or token must have been set through account administration (its signed row in the account trail
names exactly the stored hash: one written into the database by other means is refused). A token proves only
its own user: `--as` someone else with it is refused.

The command line then signs the user's steps with the front door's ring (core/signing.py): the engine
takes nothing from it that was not proved here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

from core.errors import Refusal
from db.engine import Sessions
from db.users import User
from operations import access

RULE = "Unauthenticated"
CLIENT = "command line"  # how the command line's password attempts are named in login_attempts


class Unauthenticated(Refusal):
    def __init__(self, message: str) -> None:
        super().__init__(RULE, message)


@dataclass(frozen=True)
class Credential:
    kind: Literal["password", "token"]
    secret: str = field(repr=False)


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
