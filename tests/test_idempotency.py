"""A retried activity — the same idempotency key twice, also at the same moment — writes nothing twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from temporalio.exceptions import ApplicationError

from activities.household import HouseholdActivities
from core.signing import sign_input
from db import signing_keys, users
from db.schema import audit_log, ledger_transfers, outbox
from models import MoneyOp, Stage, Step, TransitionRecord, VerifyInput
from models.assertion import digest_of, signed_input
from operations import sample
from operations.imports import register
from tests.conftest import FINDINGS, FRONT_DOOR, make_households, to_csv
from workflows.household import HouseholdWorkflow


async def _registered(sessions):
    (h,) = make_households(1, support_type="new_build")
    await register(sessions, to_csv([h]), "t.csv", sample.PROVINCE_USER)
    return h


async def _record(sessions, h, seq, step, from_stage, to_stage, user, **kw) -> TransitionRecord:
    """The record the workflow would hand the activity, signed as the suite's front door signs the step."""
    async with sessions() as s:
        actor = await users.require_actor(s, user)
    at = kw.pop("at", datetime.now(UTC))
    evidence = kw.pop("evidence", ["doc"])
    signed = {
        "actor": actor.model_dump(mode="json"),
        "evidence": evidence,
        "reason": kw.get("reason"),
        "source": kw.get("source"),
    }
    assertion = FRONT_DOOR.sign(
        workflow_id=h.workflow_id, step=step.value, input_digest=digest_of(signed), user_id=actor.user_id, now=at
    )
    return TransitionRecord(
        idempotency_key=f"{h.workflow_id}#{seq}",
        workflow_id=h.workflow_id,
        household_code=h.code,
        seq=seq,
        step=step,
        from_stage=from_stage,
        to_stage=to_stage,
        at=at,
        actor=actor,
        evidence=evidence,
        support_type=h.support_type,
        beneficiary_group=h.beneficiary_group,
        next_agency="UBND",
        assertion=assertion,
        signed_input=signed,
        **kw,
    )


async def _counts(sessions, code):
    async with sessions() as s:
        return (
            await s.scalar(select(func.count()).where(audit_log.c.household_code == code)),
            await s.scalar(select(func.count()).where(ledger_transfers.c.household_code == code)),
            await s.scalar(select(func.count()).where(outbox.c.household_code == code)),
        )


async def test_the_same_key_twice_leaves_one_audit_row_and_one_transfer(sessions):
    acts = HouseholdActivities(sessions)
    h = await _registered(sessions)
    commune, district = sample.commune_user(h.district, h.commune), sample.district_user(h.district)
    verify = await _record(sessions, h, 1, Step.VERIFY, Stage.VERIFICATION, Stage.APPROVAL, commune)
    await acts.record_transition(verify)
    await acts.record_transition(
        await _record(sessions, h, 2, Step.APPROVE, Stage.APPROVAL, Stage.FUND_ALLOCATION, district)
    )
    allocate = await _record(
        sessions,
        h,
        3,
        Step.ALLOCATE,
        Stage.FUND_ALLOCATION,
        Stage.CONSTRUCTION,
        "tc.hoang",
        money=MoneyOp.RESERVE,
        source="NS-TINH",
    )
    first = await acts.record_transition(allocate)
    before = await _counts(sessions, h.code)
    second = await acts.record_transition(allocate)

    assert not first.replayed and second.replayed
    assert (second.audit_id, second.audit_hash, second.transfer_id, second.amount) == (
        first.audit_id,
        first.audit_hash,
        first.transfer_id,
        60_000_000,
    )
    assert await _counts(sessions, h.code) == before == (3, 1, 4)


async def test_concurrent_attempts_with_one_key_write_once(sessions):
    acts = HouseholdActivities(sessions)
    h = await _registered(sessions)
    rec = await _record(
        sessions, h, 1, Step.VERIFY, Stage.VERIFICATION, Stage.APPROVAL, sample.commune_user(h.district, h.commune)
    )
    outcomes = await asyncio.gather(*(acts.record_transition(rec) for _ in range(5)))
    assert len({o.audit_id for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    assert (await _counts(sessions, h.code))[0] == 1


async def test_a_key_reused_for_another_step_is_refused(sessions):
    acts = HouseholdActivities(sessions)
    h = await _registered(sessions)
    commune = sample.commune_user(h.district, h.commune)
    verify = await _record(sessions, h, 1, Step.VERIFY, Stage.VERIFICATION, Stage.APPROVAL, commune)
    await acts.record_transition(verify)
    other = await _record(
        sessions, h, 1, Step.CANCEL, Stage.VERIFICATION, Stage.CANCELLED, sample.district_user(h.district)
    )
    with pytest.raises(ApplicationError) as caught:
        await acts.record_transition(other)
    assert caught.value.type == "IdempotencyConflict" and caught.value.non_retryable


async def test_a_transition_that_does_not_follow_the_recorded_one_is_refused(sessions):
    acts = HouseholdActivities(sessions)
    h = await _registered(sessions)
    skipping = await _record(
        sessions, h, 2, Step.APPROVE, Stage.APPROVAL, Stage.FUND_ALLOCATION, sample.district_user(h.district)
    )
    with pytest.raises(ApplicationError) as caught:
        await acts.record_transition(skipping)
    assert caught.value.type == "OutOfSequence"
    assert await _counts(sessions, h.code) == (0, 0, 0)


async def test_a_retried_allocation_hands_back_the_same_tranches_and_reserves_nothing_more(sessions):
    acts = HouseholdActivities(sessions)
    h = await _registered(sessions)
    commune, district = sample.commune_user(h.district, h.commune), sample.district_user(h.district)
    await acts.record_transition(
        await _record(sessions, h, 1, Step.VERIFY, Stage.VERIFICATION, Stage.APPROVAL, commune)
    )
    await acts.record_transition(
        await _record(sessions, h, 2, Step.APPROVE, Stage.APPROVAL, Stage.FUND_ALLOCATION, district)
    )
    allocate = await _record(
        sessions,
        h,
        3,
        Step.ALLOCATE,
        Stage.FUND_ALLOCATION,
        Stage.CONSTRUCTION,
        "tc.hoang",
        money=MoneyOp.RESERVE,
        plan_tranches=True,
    )
    first = await acts.record_transition(allocate)
    counts = await _counts(sessions, h.code)
    # The worker died before reporting: the activity runs again with the same key.
    again = await acts.record_transition(allocate)
    assert again.replayed and not first.replayed
    assert (again.allocation, again.sources, again.amount) == (first.allocation, first.sources, first.amount)
    assert [a.amount for a in first.allocation] == [42_000_000, 18_000_000]
    assert await _counts(sessions, h.code) == counts


async def test_a_step_committed_before_a_crash_keeps_its_first_time_in_the_history(client, sessions, task_queue):
    """The worker committed a step, then died before its workflow task completed. The retry runs in a new
    workflow task with a later workflow.now(); it finds the committed row, and the history records the time
    the database holds, so the three records still say one thing."""
    from auditor.records import read_records
    from auditor.verify import verify
    from tests.conftest import enroll
    from tests.test_audit import trails_of

    (h,) = await enroll(client, sessions, task_queue, make_households(1))
    commune = sample.commune_user(h.district, h.commune)
    # The step as the officer's front door signed it, up to seven minutes before the retry (not before the suite's
    # key was registered).
    async with sessions() as s:
        actor = await users.require_actor(s, commune)
        key = await signing_keys.get(s, FRONT_DOOR.active)
    first_at = max(datetime.now(UTC) - timedelta(minutes=7), key.valid_from + timedelta(milliseconds=1))
    inp = sign_input(
        FRONT_DOOR,
        VerifyInput(actor=actor, evidence=["BB-XM-01"], findings=FINDINGS),
        workflow_id=h.workflow_id,
        step=Step.VERIFY.value,
        user_id=commune,
        now=first_at,
    )
    # What the first attempt wrote then (the same input the update carries).
    committed = await _record(sessions, h, 1, Step.VERIFY, Stage.VERIFICATION, Stage.APPROVAL, commune)
    committed = committed.model_copy(
        update={
            "at": first_at,
            "evidence": ["BB-XM-01"],
            "next_agency": None,
            "assertion": inp.assertion,
            "signed_input": signed_input(inp),
        }
    )
    await HouseholdActivities(sessions).record_transition(committed)

    result = await client.get_workflow_handle(h.workflow_id).execute_update(HouseholdWorkflow.verify, inp)
    assert result.seq == 1 and result.at == committed.at
    [trail] = await trails_of(client, [h.code])
    assert [t.record.at for t in trail.transitions] == [committed.at]
    report = verify([trail], await read_records(sessions, [h.code]))
    assert report.discrepancies == [] and report.transitions == report.audit_rows == 1
