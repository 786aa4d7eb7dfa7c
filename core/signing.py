"""Ed25519 keys for signed action assertions: a private ring for a front door, public keys for everyone else.

A front door (web app, command line; the payment channel for its answers) holds a `SigningRing`: `id:key`
lines, the key 32 raw bytes in URL-safe base64, the first one active, as the payload keys are kept. The
engine and the auditors hold only `PublicKey`s, each with the holder it signs for and the period it was
valid in: a rotated-out key still verifies what it signed while it was valid, and nothing signed after.
PostgreSQL keeps the public keys (`signing_keys`, written by the owner role only; db/signing_keys.py).

`verify` is pure and deterministic, so a workflow's update validator can call it with `workflow.now()`.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core import keyfiles
from models.assertion import ActionAssertion, signed_bytes

# A front door's assertion is good for this long: enough for a slow network, too short to hoard.
STEP_TTL = timedelta(minutes=10)
# A payout batch's one assertion covers every household of its selection while the batch runs.
BATCH_TTL = timedelta(hours=12)
# Clocks of the front door and the engine may differ by this much.
CLOCK_SKEW = timedelta(minutes=2)


class SigningKeyError(Exception):
    """A key ring or a public key that cannot be read."""


class Unauthenticated(Exception):
    """An assertion the engine does not accept; `message` says which rule it breaks."""

    rule = "Unauthenticated"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_b64, _unb64 = keyfiles.b64, keyfiles.unb64


@dataclasses.dataclass(frozen=True)
class PublicKey:
    key_id: str
    holder: str
    public: bytes  # raw 32 bytes
    valid_from: datetime
    valid_until: datetime | None = None

    def valid_at(self, at: datetime) -> bool:
        """Whether something issued `at` may carry this key's signature; a front door whose clock runs a little
        behind the registration's is allowed the usual skew."""
        return self.valid_from - CLOCK_SKEW <= at and (self.valid_until is None or at < self.valid_until)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "key_id": self.key_id,
            "holder": self.holder,
            "public_key": _b64(self.public),
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> PublicKey:
        def when(v: object) -> datetime | None:
            return v if isinstance(v, datetime) or v is None else datetime.fromisoformat(str(v))

        public = d["public_key"]
        return cls(
            key_id=str(d["key_id"]),
            holder=str(d["holder"]),
            public=_unb64(public) if isinstance(public, str) else bytes(public),  # type: ignore[arg-type]
            valid_from=when(d["valid_from"]),  # type: ignore[arg-type]
            valid_until=when(d.get("valid_until")),
        )


@dataclasses.dataclass(frozen=True)
class SigningRing:
    """A front door's private keys by id; `active` signs, the others are kept so their public halves can
    still be listed (they verify what they signed)."""

    active: str
    keys: dict[str, bytes]  # raw 32-byte private keys

    @classmethod
    def parse(cls, text: str, *, where: str = "SIGNING_KEYS") -> SigningRing:
        keys = keyfiles.parse(text, where=where, kind="an Ed25519 key", error=SigningKeyError)
        return cls(active=next(iter(keys)), keys=keys)

    def dump(self) -> str:
        return keyfiles.dump(self.active, self.keys)

    def public(self, key_id: str | None = None) -> bytes:
        from cryptography.hazmat.primitives import serialization

        private = Ed25519PrivateKey.from_private_bytes(self.keys[key_id or self.active])
        return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def rotated(self, key_id: str | None = None) -> SigningRing:
        key_id = key_id or new_key_id()
        if key_id in self.keys:
            raise SigningKeyError(f"key id {key_id!r} is already in the ring")
        return SigningRing(active=key_id, keys={key_id: secrets.token_bytes(32), **self.keys})

    def sign(
        self,
        *,
        workflow_id: str,
        step: str,
        input_digest: str,
        user_id: str,
        now: datetime | None = None,
        ttl: timedelta = STEP_TTL,
        nonce: str | None = None,
    ) -> ActionAssertion:
        issued = now or datetime.now(UTC)
        fields = dict(
            workflow_id=workflow_id,
            step=step,
            input_digest=input_digest,
            user_id=user_id,
            issued_at=issued,
            expires_at=issued + ttl,
            nonce=nonce or secrets.token_urlsafe(18),
            key_id=self.active,
        )
        signature = Ed25519PrivateKey.from_private_bytes(self.keys[self.active]).sign(signed_bytes(**fields))
        return ActionAssertion(**fields, signature=_b64(signature))


def new_key_id(prefix: str = "s") -> str:
    return f"{prefix}{datetime.now(UTC):%Y%m%d%H%M%S}"


def new_ring(key_id: str | None = None) -> SigningRing:
    key_id = key_id or new_key_id()
    return SigningRing(active=key_id, keys={key_id: secrets.token_bytes(32)})


def read_ring(path: Path) -> SigningRing:
    return SigningRing.parse(path.read_text(encoding="utf-8"), where=path.name)


def write_ring(path: Path, ring: SigningRing) -> None:
    """Write the ring readable by its owner only, replacing the file in one step."""
    keyfiles.write_secret(path, ring.dump())


@dataclasses.dataclass(frozen=True)
class TrustedKeys:
    """The public keys an engine or an auditor verifies with, by id."""

    keys: Mapping[str, PublicKey]

    @classmethod
    def of(cls, keys: Iterable[PublicKey]) -> TrustedKeys:
        return cls({k.key_id: k for k in keys})

    def verify(
        self,
        a: ActionAssertion | None,
        *,
        workflow_id: str,
        step: str,
        input_digest: str,
        user_id: str,
        holder: str,
        now: datetime,
        max_ttl: timedelta = STEP_TTL,
        check_expiry: bool = True,
    ) -> None:
        """Refuse (`Unauthenticated`, naming the rule) an assertion that is missing, not signed by a key of
        `holder` valid when it was issued, or not for exactly this household, step, input and user;
        with `check_expiry`, also one not yet or no longer valid at `now`."""
        if a is None:
            raise Unauthenticated(f"step {step!r} carries no signed assertion: sign in through a front door")
        key = self.keys.get(a.key_id)
        if key is None:
            raise Unauthenticated(f"assertion signed by key {a.key_id!r}, which the engine does not know")
        if key.holder != holder:
            raise Unauthenticated(f"assertion signed by key {a.key_id!r} of {key.holder}, not of {holder}")
        if not key.valid_at(a.issued_at):
            raise Unauthenticated(f"assertion issued {a.issued_at.isoformat()}, when key {a.key_id!r} was not valid")
        try:
            Ed25519PublicKey.from_public_bytes(key.public).verify(_unb64(a.signature), a.signed_bytes())
        except (InvalidSignature, ValueError):
            raise Unauthenticated(f"the assertion's signature does not verify under key {a.key_id!r}") from None
        if a.workflow_id != workflow_id:
            raise Unauthenticated(f"the assertion is for {a.workflow_id}, not {workflow_id}")
        if a.step != step:
            raise Unauthenticated(f"the assertion is for step {a.step!r}, not {step!r}")
        if a.user_id != user_id:
            raise Unauthenticated(f"the assertion names user {a.user_id!r}, but the step is taken as {user_id!r}")
        if a.input_digest != input_digest:
            raise Unauthenticated("the step's input is not the input the assertion was signed for")
        if a.expires_at - a.issued_at > max_ttl or a.expires_at <= a.issued_at:
            raise Unauthenticated(f"the assertion's lifetime exceeds the {max_ttl} allowed")
        if check_expiry:
            if now < a.issued_at - CLOCK_SKEW:
                raise Unauthenticated(f"the assertion is issued in the future ({a.issued_at.isoformat()})")
            if now >= a.expires_at:
                raise Unauthenticated(f"the assertion expired at {a.expires_at.isoformat()}")


# The keys this process's workflows verify with (update validators cannot do I/O). The worker installs them
# from PostgreSQL at start and refreshes them; validators do not run on replay, so a change of keys never
# changes a replayed history.
_TRUSTED = TrustedKeys({})


def trust(keys: TrustedKeys) -> None:
    global _TRUSTED
    _TRUSTED = keys


def trusted() -> TrustedKeys:
    return _TRUSTED


def sign_input(
    ring: SigningRing,
    inp,
    *,
    workflow_id: str,
    step: str,
    user_id: str,
    ttl: timedelta = STEP_TTL,
    now: datetime | None = None,
):
    """The step's input with its assertion: what a front door sends once it has authenticated `user_id`."""
    from models.assertion import input_digest

    a = ring.sign(workflow_id=workflow_id, step=step, input_digest=input_digest(inp), user_id=user_id, ttl=ttl, now=now)
    return inp.model_copy(update={"assertion": a})


def load_ring(settings, *, bank: bool = False) -> SigningRing:
    """A front door's signing ring: SIGNING_KEYS inline, else the key file; a clear error when neither."""
    if settings.signing_keys and not bank:
        return SigningRing.parse(settings.signing_keys)
    path = settings.bank_signing_keys_path if bank else settings.signing_keys_path
    if not path.exists():
        raise SigningKeyError(
            f"no signing key ring ({'BANK_SIGNING_KEYS_FILE' if bank else 'SIGNING_KEYS or SIGNING_KEYS_FILE'}; "
            f"expected {path.name} in the state folder): 'starter.py stack up' creates one"
        )
    return read_ring(path)
