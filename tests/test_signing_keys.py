"""The signing keys of a deployment, in PostgreSQL: registered by the owner only, rotated without stranding
what the old key signed, and read from public-key files that never hold a private key."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from core.signing import PublicKey, Unauthenticated, read_ring
from db import signing_keys
from models.actions import VerifyInput
from models.actor import Actor, Jurisdiction
from models.assertion import CHANNEL, OFFICERS, input_digest
from operations import sample
from operations import signing_keys as ops
from tests.conftest import FINDINGS, TEST_SIGNING_FILE

WF = "household-KEYS-00001"


def _inp() -> VerifyInput:
    actor = Actor(
        user_id="x.keys", role="commune_officer", agency="UBND xã", jurisdiction=Jurisdiction(province=sample.PROVINCE)
    )
    return VerifyInput(actor=actor, evidence=["BB"], findings=FINDINGS)


def _verify(keys, ring, *, issued: datetime) -> None:
    inp = _inp()
    a = ring.sign(workflow_id=WF, step="verify", input_digest=input_digest(inp), user_id=inp.actor.user_id, now=issued)
    keys.verify(
        a,
        workflow_id=WF,
        step="verify",
        input_digest=input_digest(inp),
        user_id=inp.actor.user_id,
        holder=OFFICERS,
        now=issued,
        check_expiry=False,
    )


async def test_rotation_keeps_old_signatures_verifiable_and_stops_new_ones(scratch_settings, scratch, tmp_path):
    ring_file = tmp_path / "signing-keys"
    shutil.copy(TEST_SIGNING_FILE, ring_file)
    settings = scratch_settings.model_copy(update={"signing_keys_file": ring_file})
    old = read_ring(ring_file)
    active, kept = await ops.rotate(settings)

    new = read_ring(ring_file)
    assert new.active == active != old.active and kept == [old.active] and new.keys[old.active] == old.keys[old.active]
    async with scratch() as s:
        keys = await signing_keys.load(s)
    retired = keys.keys[old.active]
    assert retired.valid_until is not None and keys.keys[active].valid_until is None
    while_valid = retired.valid_from + (retired.valid_until - retired.valid_from) / 2
    _verify(keys, old, issued=while_valid)  # signed before the rotation: still good, years later too
    with pytest.raises(Unauthenticated, match="was not valid"):
        _verify(keys, old, issued=retired.valid_until + timedelta(seconds=1))
    _verify(keys, new, issued=datetime.now(UTC))


async def test_public_files_register_as_the_owner_only(scratch_settings, scratch, tmp_path):
    ring = read_ring(TEST_SIGNING_FILE).rotated("officers-pubfile")
    text_ = ops.public_file_text(ring, CHANNEL)
    assert all(len(line.split()) == 3 for line in text_.splitlines()) and ring.dump().split(":")[1][:10] not in text_
    keys = ops.parse_public_file(text_, where="bank.pub")
    assert [k.key_id for k in keys] == ["officers-pubfile", "test-officers"] and {k.holder for k in keys} == {CHANNEL}
    added = await ops.register(scratch_settings, keys[:1])
    assert added == ["officers-pubfile"] and await ops.register(scratch_settings, keys[:1]) == []
    for bad, says in (("k1 officers", "expected"), ("k1 admins AAAA", "expected"), ("k1 officers AAAA", "32 bytes")):
        with pytest.raises(ValueError, match=says):
            ops.parse_public_file(bad, where="x.pub")
    # The application's login (what the worker and the web app hold) cannot make a key the engine trusts.
    forged = PublicKey("forged", OFFICERS, b"\x01" * 32, datetime.now(UTC))
    with pytest.raises(DBAPIError, match="permission denied"):
        async with scratch() as s, s.begin():
            await signing_keys.register(s, forged)
    async with scratch() as s:
        assert await s.scalar(text("SELECT count(*) FROM signing_keys WHERE key_id = 'forged'")) == 0
