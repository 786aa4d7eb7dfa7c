"""Who may sign in as which user: passwords (argon2), server-side sessions, API tokens, login throttling.

A secret is never stored: passwords as argon2 hashes, session and API tokens as their SHA-256. What a
signed-in user may see and do is not decided here: the user's role, agency and jurisdiction come from
`users`, and the engine checks them on every step.

A stored hash proves something only when account administration put it there: the password or token is
accepted only if the latest signed change of it in the account trail names exactly the stored hash
(db/account_changes.py `credential_set`). So a hash written straight into `user_credentials` or
`api_tokens` with the application's login (which can write both) signs nobody in. Only operations/accounts.py
calls `set_password` and `create_token`, each with its signed trail row. Likewise a session is good only
with the web app's signature over it (`open_session`), so a row inserted into `web_sessions` is no session.
The tables themselves are db/access.py's.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import ValidationError

from core.errors import Refusal
from core.signing import SigningRing, Unauthenticated
from db import access as access_db
from db import account_changes as trail
from db import signing_keys
from db import users as users_db
from db.engine import Session
from db.users import User
from models.actor import ACCOUNT_ADMIN_ROLE
from models.assertion import OFFICERS, ActionAssertion, digest_of

HASHER = PasswordHasher()
MIN_PASSWORD = 10
# Five wrong passwords for one user name within the window lock that name until the window has passed
# since the last failure, whoever tries: guessing is slowed to a handful per quarter hour.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
SESSION_TTL = timedelta(hours=8)  # a working day


@dataclass(frozen=True)
class SignedIn:
    user: User
    csrf_token: str | None  # sessions carry one; API tokens need none (no ambient cookie to abuse)
    via: str  # "session", "token", or "password" (checked, no session opened: the command line)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_password_rules(user_id: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Refusal("WeakPassword", f"a password needs at least {MIN_PASSWORD} characters")
    if user_id.lower() in password.lower():
        raise Refusal("WeakPassword", "a password must not contain the user name")


def not_set_through_administration(user_id: str) -> Refusal:
    return Refusal("Unauthenticated", f"the credential of {user_id} was not set through account administration")


async def set_password(session: Session, user_id: str, password: str) -> str:
    """Store the password's argon2 hash, and return that hash (for the account trail to name)."""
    if await users_db.get(session, user_id) is None:
        raise Refusal("UnknownUser", f"user {user_id!r} is not registered")
    check_password_rules(user_id, password)
    stored = HASHER.hash(password)
    await access_db.store_password_hash(session, user_id, stored)
    return stored


@dataclass(frozen=True)
class SignInOutcome:
    """A sign-in's answer. A refused attempt is still recorded, so the caller commits either way."""

    token: str | None = None
    who: SignedIn | None = None
    refusal: Refusal | None = None


async def sign_in(session: Session, user_id: str, password: str, client: str, *, signer: SigningRing) -> SignInOutcome:
    """Check a password and open a session signed by `signer` (the web app's front-door ring). The caller
    commits (also on a refusal: the attempt is recorded)."""
    checked = await check_password(session, user_id, password, client)
    if checked.refusal is not None:
        return checked
    token, signed = await open_session(session, checked.who.user, signer=signer)
    return SignInOutcome(token=token, who=signed)


async def check_password(session: Session, user_id: str, password: str, client: str) -> SignInOutcome:
    """Who a password proves, without opening a session (the web's sign-in and the command line share it).
    Every checked attempt is recorded; a name locked by too many failures is refused before its password is
    looked at; a disabled user is refused. The caller commits (also on a refusal)."""
    now = datetime.now(UTC)
    failures, latest = await access_db.recent_failures(session, user_id, now, FAILURE_WINDOW)
    if failures >= MAX_FAILURES and latest is not None:
        wait = int((latest + FAILURE_WINDOW - now).total_seconds() // 60) + 1
        why = f"too many failed sign-ins for {user_id!r}: try again in {wait} min"
        return SignInOutcome(refusal=Refusal("TooManyAttempts", why))
    user = await users_db.get(session, user_id)
    stored = await access_db.password_hash(session, user_id)
    ok = False
    if user is not None and stored is not None:
        try:
            ok = HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        HASHER.hash(password)  # as slow as a real check, so timing does not tell which names exist
    # The right password for a hash account administration did not set counts as a failed attempt.
    bound = ok and await trail.credential_set(session, user_id, stored)
    await access_db.record_attempt(session, user_id, client, bound)
    if not ok:
        return SignInOutcome(refusal=Refusal("BadCredentials", "user name or password is wrong"))
    if not bound:
        return SignInOutcome(refusal=not_set_through_administration(user_id))
    if not user.active:
        return SignInOutcome(refusal=Refusal("UserDisabled", f"user {user_id!r} is disabled"))
    # No rehash on sign-in (argon2's parameters moving on): the stored hash is the one the trail names, and
    # only account administration may change it. A new hash comes with the next reset.
    return SignInOutcome(who=SignedIn(user, None, "password"))


SESSION_WORKFLOW, SESSION_STEP = "web-session", "session"  # what a session's assertion names


def _session_digest(token_hash: str, user_id: str, csrf: str) -> str:
    return digest_of({"token_hash": token_hash, "user_id": user_id, "csrf_token": csrf})


async def open_session(session: Session, user: User, *, signer: SigningRing) -> tuple[str, SignedIn]:
    """A new session for a user whose identity has been established (by `sign_in`'s password check), signed
    by the web app's ring for its lifetime: the signature is what makes the row a session."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    a = signer.sign(
        workflow_id=SESSION_WORKFLOW,
        step=SESSION_STEP,
        user_id=user.user_id,
        ttl=SESSION_TTL,
        input_digest=_session_digest(digest(token), user.user_id, csrf),
    )
    await access_db.insert_session(
        session,
        token_hash=digest(token),
        user_id=user.user_id,
        csrf_token=csrf,
        expires_at=a.expires_at,
        assertion=a.model_dump(mode="json"),
    )
    return token, SignedIn(user, csrf, "session")


async def session_user(session: Session, token: str) -> SignedIn | None:
    row = await access_db.live_session(session, digest(token))
    if row is None or row.assertion is None:
        return None
    try:
        a = ActionAssertion.model_validate(row.assertion)
        (await signing_keys.trusted_for(session, a.key_id)).verify(
            a,
            workflow_id=SESSION_WORKFLOW,
            step=SESSION_STEP,
            input_digest=_session_digest(digest(token), row.user_id, row.csrf_token),
            user_id=row.user_id,
            holder=OFFICERS,
            now=datetime.now(UTC),
            max_ttl=SESSION_TTL,
        )
    except (Unauthenticated, ValidationError):
        return None  # not a session the web app opened
    user = await users_db.get(session, row.user_id)
    return SignedIn(user, row.csrf_token, "session") if user and user.active else None


async def sign_out(session: Session, token: str) -> None:
    await access_db.end_session(session, digest(token))


async def create_token(session: Session, user_id: str, name: str) -> str:
    """A new API token for a machine client acting as `user_id`; shown once, stored as its hash."""
    if await users_db.get(session, user_id) is None:
        raise Refusal("UnknownUser", f"user {user_id!r} is not registered")
    token = "xnt_" + secrets.token_urlsafe(32)
    await access_db.insert_token(session, user_id, name, digest(token))
    return token


async def check_token(session: Session, token: str) -> SignInOutcome:
    """Who an API token proves: a live token of an active user, issued through account administration."""
    row = await access_db.use_token(session, digest(token))
    user = await users_db.get(session, row.user_id) if row is not None else None
    if row is None or user is None or not user.active:
        why = "the API token is not known, was revoked, or its user is disabled"
        return SignInOutcome(refusal=Refusal("BadCredentials", why))
    if not await trail.credential_set(session, row.user_id, row.token_hash, token=row.name):
        return SignInOutcome(refusal=not_set_through_administration(row.user_id))
    return SignInOutcome(who=SignedIn(user, None, "token"))


async def token_user(session: Session, token: str) -> SignedIn | None:
    return (await check_token(session, token)).who


async def admins_with_credentials(session: Session) -> list[str]:
    """Active administrators who can prove who they are (a password or a live token). While there is none,
    the first administrator may be set up (`users bootstrap`); after that only an administrator may."""
    return await access_db.admins_with_credentials(session, ACCOUNT_ADMIN_ROLE)
