"""A signed action assertion: the front door that authenticated a person says "this user takes this step,
with exactly this input, on this household, now".

The assertion travels inside the step's input. The engine (the update's validator, then the recording
activity) and the auditors verify it against public keys; only the front doors (web app, command line, the
payment channel for its answers) hold private keys. What is signed is the canonical encoding of every field
but the signature: UTF-8 JSON, keys sorted, no spaces, times in UTC with microseconds.

This module is pure (no keys, no I/O) so the workflow sandbox can use it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

VERSION = 1
# Who may sign what: officers' front doors sign officers' steps, policy changes and batches; the payment
# channel signs its own answers. A key is registered for one holder.
OFFICERS = "officers"
CHANNEL = "channel"


def canonical(value: Any) -> bytes:
    """The one byte encoding that is signed and digested."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ActionAssertion(BaseModel):
    model_config = ConfigDict(frozen=True)

    v: int = VERSION
    workflow_id: str = Field(min_length=1, max_length=200)
    step: str = Field(min_length=1, max_length=60)
    input_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    user_id: str = Field(min_length=1, max_length=64)
    issued_at: datetime
    expires_at: datetime
    nonce: str = Field(min_length=16, max_length=64)
    key_id: str = Field(min_length=1, max_length=64)
    signature: str = Field(min_length=1, max_length=200)  # URL-safe base64 of the Ed25519 signature

    def signed_bytes(self) -> bytes:
        return signed_bytes(
            workflow_id=self.workflow_id,
            step=self.step,
            input_digest=self.input_digest,
            user_id=self.user_id,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            nonce=self.nonce,
            key_id=self.key_id,
            v=self.v,
        )


def signed_bytes(
    *,
    workflow_id: str,
    step: str,
    input_digest: str,
    user_id: str,
    issued_at: datetime,
    expires_at: datetime,
    nonce: str,
    key_id: str,
    v: int = VERSION,
) -> bytes:
    return canonical(
        {
            "v": v,
            "workflow_id": workflow_id,
            "step": step,
            "input_digest": input_digest,
            "user_id": user_id,
            "issued_at": _utc(issued_at),
            "expires_at": _utc(expires_at),
            "nonce": nonce,
            "key_id": key_id,
        }
    )


def digest_of(data: dict[str, Any]) -> str:
    """SHA-256 (hex) of a step's input as JSON, without its assertion."""
    return hashlib.sha256(canonical({k: v for k, v in data.items() if k != "assertion"})).hexdigest()


def signed_input(model: BaseModel) -> dict[str, Any]:
    """What an assertion's digest covers: the step's input as JSON, without the assertion itself."""
    return model.model_dump(mode="json", exclude={"assertion"})


def input_digest(model: BaseModel) -> str:
    return digest_of(signed_input(model))
