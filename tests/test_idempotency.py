"""A retried activity — the same idempotency key twice, also at the same moment — writes nothing twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from temporalio.exceptions import ApplicationError

from activities.household import HouseholdActivities
from db import users
from db.schema import audit_log, ledger_transfers, outbox
from models import MoneyOp, Stage, Step, TransitionRecord
from operations import sample
from operations.imports import register
from tests.conftest import make_households, to_csv


async def _registered(sessions):
    (h,) = make_households(1, support_type="new_build")
    await register(sessions, to_csv([h]), "t.csv", sample.PROVINCE_USER)
    return h


async def _record(sessions, h, seq, step, from_stage, to_stage, user, **kw) -> TransitionRecord:
    async with sessions() as s:
        actor = await users.require_actor(s, user)
    return TransitionRecord(
        idempotency_key=f"{h.workflow_id}#{seq}",
        workflow_id=h.workflow_id,
        household_code=h.code,
        seq=seq,
        step=step,
        from_stage=from_stage,
        to_stage=to_stage,
        at=datetime.now(UTC),
        actor=actor,
        evidence=["doc"],
        support_type=h.support_type,
        beneficiary_group=h.beneficiary_group,
        next_agency="UBND",
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
        sessions, h, 3, Step.ALLOCATE, Stage.FUND_ALLOCATION, Stage.CONSTRUCTION, "tc.hoang",
        money=MoneyOp.RESERVE, source="NS-TINH",
    )  # fmt: skip
    first = await acts.record_transition(allocate)
    before = await _counts(sessions, h.code)
    second = await acts.record_transition(allocate)

    assert not first.replayed and second.replayed
    assert (second.audit_id, second.audit_hash, second.transfer_id, second.amount) == (
        first.audit_id, first.audit_hash, first.transfer_id, 60_000_000,
    )  # fmt: skip
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
    await acts.record_transition(await _record(sessions, h, 1, Step.VERIFY, Stage.VERIFICATION, Stage.APPROVAL,
                                               commune))  # fmt: skip
    await acts.record_transition(await _record(sessions, h, 2, Step.APPROVE, Stage.APPROVAL,
                                               Stage.FUND_ALLOCATION, district))  # fmt: skip
    allocate = await _record(sessions, h, 3, Step.ALLOCATE, Stage.FUND_ALLOCATION, Stage.CONSTRUCTION, "tc.hoang",
                             money=MoneyOp.RESERVE, plan_tranches=True)  # fmt: skip
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
    from tests.conftest import enroll, take_step
    from tests.test_audit import trails_of

    (h,) = await enroll(client, sessions, task_queue, make_households(1))
    commune = sample.commune_user(h.district, h.commune)
    committed = await _record(sessions, h, 1, Step.VERIFY, Stage.VERIFICATION, Stage.APPROVAL, commune)
    # What the first attempt wrote, seven minutes before the retry (the same input the update will carry).
    committed = committed.model_copy(
        update={"at": committed.at - timedelta(minutes=7), "evidence": ["BB-XM-01"], "next_agency": None}
    )
    await HouseholdActivities(sessions).record_transition(committed)

    result = await take_step(client, sessions, h.code, Step.VERIFY, commune, evidence=["BB-XM-01"])
    assert result.seq == 1 and result.at == committed.at
    [trail] = await trails_of(client, [h.code])
    assert [t.record.at for t in trail.transitions] == [committed.at]
    report = verify([trail], await read_records(sessions, [h.code]))
    assert report.discrepancies == [] and report.transitions == report.audit_rows == 1
