"""Signed action assertions, as pure logic: what verifies, and each way one does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.signing import (
    BATCH_TTL,
    PublicKey,
    SigningKeyError,
    SigningRing,
    TrustedKeys,
    Unauthenticated,
    new_ring,
    read_ring,
    sign_input,
    write_ring,
)
from models.actions import VerifyInput
from models.actor import Actor, Jurisdiction
from models.assertion import CHANNEL, OFFICERS, input_digest
from tests.conftest import FINDINGS

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
ACTOR = Actor(
    user_id="x.maipha",
    role="commune_officer",
    agency="UBND xã Mai Pha",
    jurisdiction=Jurisdiction(province="Lạng Sơn", district="Cao Lộc", commune="Mai Pha"),
)
WF = "household-LS270W-00001"


def trusted(
    ring: SigningRing, holder: str = OFFICERS, since: datetime = NOW - timedelta(days=1), until: datetime | None = None
) -> TrustedKeys:
    return TrustedKeys.of([PublicKey(k, holder, ring.public(k), since, until) for k in ring.keys])


def signed(ring: SigningRing, inp: VerifyInput | None = None, **kw) -> VerifyInput:
    inp = inp or VerifyInput(actor=ACTOR, evidence=["BB-01"], findings=FINDINGS)
    args = {"workflow_id": WF, "step": "verify", "user_id": ACTOR.user_id, "now": NOW} | kw
    return sign_input(ring, inp, **args)


def check(keys: TrustedKeys, inp: VerifyInput, **kw) -> None:
    args = (
        dict(
            workflow_id=WF,
            step="verify",
            input_digest=input_digest(inp),
            user_id=inp.actor.user_id,
            holder=OFFICERS,
            now=NOW + timedelta(seconds=5),
        )
        | kw
    )
    keys.verify(inp.assertion, **args)


def test_a_signed_step_verifies_and_its_digest_ignores_the_assertion():
    ring = new_ring("k1")
    inp = signed(ring)
    check(trusted(ring), inp)
    assert input_digest(inp) == input_digest(inp.model_copy(update={"assertion": None}))
    # The assertion survives the trip through JSON (what Temporal carries) and still verifies.
    check(trusted(ring), VerifyInput.model_validate_json(inp.model_dump_json()))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"workflow_id": "household-LS270W-00002"}, "not household-LS270W-00002"),
        ({"step": "approve"}, "not 'approve'"),
        ({"user_id": "someone.else"}, "someone.else"),
        ({"now": NOW + timedelta(hours=1)}, "expired"),
        ({"now": NOW - timedelta(hours=1)}, "in the future"),
        ({"holder": CHANNEL}, "not of channel"),
    ],
)
def test_an_assertion_for_another_household_step_user_time_or_holder_is_refused(change, says):
    ring = new_ring("k1")
    inp = signed(ring)
    with pytest.raises(Unauthenticated, match=says):
        check(trusted(ring), inp, **change)


def test_a_changed_input_a_forged_signature_and_an_unknown_key_are_refused():
    ring, forger = new_ring("k1"), new_ring("k1")  # the forger even uses the same key id
    inp = signed(ring)
    tampered = inp.model_copy(update={"evidence": ["FORGED"]})
    with pytest.raises(Unauthenticated, match="not the input"):
        check(trusted(ring), tampered)
    with pytest.raises(Unauthenticated, match="does not verify"):
        check(trusted(ring), signed(forger))
    with pytest.raises(Unauthenticated, match="does not know"):
        check(trusted(new_ring("k2")), inp)
    with pytest.raises(Unauthenticated, match="no signed assertion"):
        check(trusted(ring), inp.model_copy(update={"assertion": None}))
    # Editing a signed field of the assertion itself (a longer life) breaks the signature.
    longer = inp.assertion.model_copy(update={"expires_at": NOW + timedelta(minutes=9)})
    with pytest.raises(Unauthenticated, match="does not verify"):
        check(trusted(ring), inp.model_copy(update={"assertion": longer}))


def test_a_key_verifies_only_what_it_signed_while_it_was_valid():
    ring = new_ring("old")
    retired = NOW - timedelta(minutes=1)
    keys = trusted(ring, since=NOW - timedelta(days=30), until=retired)
    with pytest.raises(Unauthenticated, match="was not valid"):
        check(keys, signed(ring))
    before = signed(ring, now=retired - timedelta(minutes=5))
    check(keys, before, now=retired - timedelta(minutes=4))
    # Auditors check years later: without expiry the signature and the key's period still decide.
    check(keys, before, now=NOW + timedelta(days=900), check_expiry=False)


def test_a_lifetime_longer_than_allowed_is_refused_even_if_signed():
    ring = new_ring("k1")
    inp = signed(ring, ttl=BATCH_TTL)
    with pytest.raises(Unauthenticated, match="lifetime"):
        check(trusted(ring), inp)
    check(trusted(ring), inp, max_ttl=BATCH_TTL)


def test_rings_round_trip_rotate_and_refuse_bad_files(tmp_path):
    ring = new_ring("a").rotated("b")
    path = tmp_path / "signing-keys"
    write_ring(path, ring)
    assert path.stat().st_mode & 0o077 == 0  # readable by its owner only
    again = read_ring(path)
    assert again == ring and again.active == "b" and set(again.keys) == {"a", "b"}
    assert again.public("a") == ring.public("a") != ring.public("b")
    bad = [
        ("", "no key"),
        ("a:c2hvcnQ", "32"),
        ("a:%%%", "not base64"),
        ("bad id:" + "A" * 43, "expected"),
        ("a:" + "A" * 43 + "\na:" + "A" * 43, "twice"),
    ]
    for text, says in bad:
        with pytest.raises(SigningKeyError, match=says):
            SigningRing.parse(text)
