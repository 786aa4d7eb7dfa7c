"""The payload codec: AES-GCM with the key id in the metadata, rotation that keeps old keys readable, and
clear refusals for a missing key, an altered payload, a plain payload (the engine's codec hands each on refused,
the auditors' reader names it) or a malformed key ring."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from auditor.history import read_trail
from core.codec import (
    EncryptionCodec,
    KeyRing,
    PayloadKeyError,
    for_reading,
    new_ring,
    read_ring,
    with_codec,
    write_ring,
)
from core.converter import DATA_CONVERTER, REFUSED, MissingPayloadKey
from models.household import Step
from operations import sample
from operations.actions import household_state
from tests.conftest import TEST_RING, enroll, make_households, running_worker, take_step

PLAIN = DATA_CONVERTER.payload_converter


def reader(ring: KeyRing) -> EncryptionCodec:
    """The auditors' codec: plain payloads pass, a payload that does not open is named."""
    return EncryptionCodec(ring, accept_plaintext=True)


async def refused_reason(codec: EncryptionCodec, payload) -> str:
    """The engine's codec does not raise on what it will not open: it hands on a refused payload, which the
    payload converter refuses as Unauthenticated when it is read."""
    [out] = await codec.decode([payload])
    assert out.metadata["encoding"] == REFUSED.encode() and out.data == b""
    with pytest.raises(ApplicationError) as refused:
        PLAIN.from_payloads([out])
    assert refused.value.type == "Unauthenticated" and refused.value.non_retryable
    assert "not sealed by a payload key this engine holds" in refused.value.message
    return refused.value.message


async def test_round_trip_with_the_key_id_in_the_metadata_and_no_plaintext():
    codec = EncryptionCodec(TEST_RING)
    [payload] = PLAIN.to_payloads([{"head_of_household": "Hoàng Văn Thụ", "cccd": "020198001234"}])
    [sealed] = await codec.encode([payload])
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    assert sealed.metadata["encryption-key-id"] == b"test-2026a"
    assert b"020198001234" not in sealed.data and "Thụ".encode() not in sealed.data
    [opened] = await codec.decode([sealed])
    assert opened == payload
    [again] = await codec.encode([payload])
    assert again.data != sealed.data  # a fresh nonce every time


async def test_rotation_old_keys_still_open_what_they_sealed():
    old = new_ring("k2025")
    rotated = old.rotated("k2026")
    assert rotated.active == "k2026" and list(rotated.keys) == ["k2026", "k2025"]
    [payload] = PLAIN.to_payloads(["Vi Thị Sinh"])
    [by_old] = await EncryptionCodec(old).encode([payload])
    [by_new] = await EncryptionCodec(rotated).encode([payload])
    assert by_new.metadata["encryption-key-id"] == b"k2026"
    assert await EncryptionCodec(rotated).decode([by_old, by_new]) == [payload, payload]
    with pytest.raises(PayloadKeyError, match="key 'k2026', which the key ring does not hold"):
        await reader(old).decode([by_new])
    # A worker without the rotated-in key: not a refusal for good (that would fail the workflow) but an error
    # that fails the workflow task, retried until the worker is given the key.
    [out] = await EncryptionCodec(old).decode([by_new])
    with pytest.raises(RuntimeError) as missing:
        PLAIN.from_payloads([out])
    assert isinstance(missing.value.__cause__, MissingPayloadKey) and not isinstance(missing.value, ApplicationError)
    assert "key 'k2026', which the key ring does not hold" in str(missing.value.__cause__)


async def test_an_altered_payload_or_a_swapped_key_id_does_not_open():
    ring = new_ring("a").rotated("b")
    [payload] = PLAIN.to_payloads([{"amount": 60_000_000}])
    [sealed] = await EncryptionCodec(ring).encode([payload])
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 1
    altered = type(sealed)(metadata=dict(sealed.metadata), data=bytes(flipped))
    with pytest.raises(PayloadKeyError, match="does not open"):
        await reader(ring).decode([altered])
    assert "does not open" in await refused_reason(EncryptionCodec(ring), altered)
    # The key id is bound as associated data: relabelling the payload to another key is refused too.
    relabelled = type(sealed)(metadata={**sealed.metadata, "encryption-key-id": b"a"}, data=sealed.data)
    with pytest.raises(PayloadKeyError, match="does not open"):
        await reader(ring).decode([relabelled])
    assert "does not open" in await refused_reason(EncryptionCodec(ring), relabelled)


async def test_plain_payloads_are_refused_by_the_engine_and_read_by_the_auditors():
    [payload] = PLAIN.to_payloads([{"code": "LS270-00001"}])
    assert "plain input is not accepted" in await refused_reason(EncryptionCodec(TEST_RING), payload)
    # Histories written before encryption was switched on: the auditors' reader still opens them.
    assert await reader(TEST_RING).decode([payload]) == [payload]
    engine = with_codec(DATA_CONVERTER, TEST_RING)
    assert await for_reading(engine).decode([payload]) == [{"code": "LS270-00001"}]
    with pytest.raises(ApplicationError, match="not sealed by a payload key"):
        await engine.decode([payload])
    # A payload that claims the refused encoding itself is no way round it.
    [out] = await EncryptionCodec(TEST_RING).decode([type(payload)(metadata={"encoding": REFUSED.encode()})])
    assert out.metadata["encoding"] == REFUSED.encode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key"),
        ("k1", "entry 1: expected 'id:base64-key'"),
        ("k1:c2hvcnQ", "key 'k1': 5 bytes, AES-256 needs 32"),
        ("k1:" + "A" * 43 + ",k1:" + "B" * 43, "key id 'k1' appears twice"),
        ("bad id:" + "A" * 43, "entry 1"),
    ],
)
def test_a_malformed_key_ring_is_refused_by_name(text, message):
    with pytest.raises(PayloadKeyError, match=message):
        KeyRing.parse(text)


def test_a_key_file_round_trips_and_is_private(tmp_path):
    path = tmp_path / "payload-keys"
    ring = new_ring("k1").rotated("k2")
    write_ring(path, ring)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_ring(path) == ring


async def test_a_household_started_under_one_key_continues_after_rotation(client, sessions, settings):
    """Rotation mid-flight: the household was started by a client sealing with the old key; then every
    process gets the rotated ring (new key active, old key kept). The workflow goes on, its history holds
    payloads under both keys, and only the rotated ring reads all of them."""
    rotated = TEST_RING.rotated(f"test-rot-{uuid.uuid4().hex[:6]}")
    new_client = Client(
        client.service_client, namespace=client.namespace, data_converter=with_codec(DATA_CONVERTER, rotated)
    )
    [h] = make_households(1)
    async with running_worker(new_client, sessions, settings) as tq:
        await enroll(client, sessions, tq, [h])  # started with the old key
        await take_step(
            new_client, sessions, h.code, Step.VERIFY, sample.commune_user(h.district, h.commune), evidence=["BB-1"]
        )
        await take_step(
            new_client, sessions, h.code, Step.APPROVE, sample.district_user(h.district), evidence=[h.decision_ref]
        )
        assert (await household_state(new_client, h.code)).stage.value == "fund_allocation"
    history = await new_client.get_workflow_handle(h.workflow_id).fetch_history()
    trail = await read_trail(history, with_codec(DATA_CONVERTER, rotated))
    assert trail.sealed_keys == {TEST_RING.active, rotated.active}
    assert trail.opened and [t.record.step for t in trail.transitions] == ["verify", "post_list", "approve"]
    # The old ring opens the start (old key) but not what the new key sealed: the trail says so.
    partial = await read_trail(history, with_codec(DATA_CONVERTER, TEST_RING))
    assert not partial.opened and partial.household["code"] == h.code and partial.transitions == []
