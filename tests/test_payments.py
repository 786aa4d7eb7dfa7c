"""The payment channel: confirmation by event, failures retried or returned to Finance, never lost and
never paid twice; a silent channel escalates on the time-skipping server."""

from __future__ import annotations

import dataclasses
import shutil
from contextlib import asynccontextmanager
from datetime import timedelta

from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.testing import ActivityEnvironment

from activities.household import HouseholdActivities
from activities.payments import PaymentActivities
from core.signing import sign_input
from db.schema import audit_log, ledger_transfers, outbox, payments, workflow_policies
from finance.channel import FAIL_REASON, HttpBank
from models import CompleteConstructionInput, Stage
from models.assertion import signed_input
from models.finance import PaymentNotice, SettleRequest, TrancheStatus
from models.household import Household, Step, workflow_id_for
from models.policy import WorkflowPolicy
from operations import sample
from operations.actions import household_state
from runtime.stack import free_port
from tests.conftest import (
    FRONT_DOOR,
    bank_process,
    drive_one,
    enroll,
    make_households,
    running_worker,
    take_step,
    tranche_is,
    wait_until,
)
from tests.test_idempotency import _record
from workflows.household import HouseholdWorkflow


async def release_first_tranche(client, sessions, h) -> None:
    await drive_one(client, sessions, h, payouts=False)
    await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
    await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U"])


@asynccontextmanager
async def paying_through(client, sessions, settings, tmp_path, **flags):
    """A bank process with these flags (BankProcess) and a worker paying through it; yields (bank, queue)."""
    with bank_process(tmp_path / "bank", **flags) as bank:
        async with running_worker(client, sessions, settings, bank=bank) as tq:
            yield bank, tq


async def released(client, sessions, tq, **overrides) -> Household:
    """One household of the poor group (and `overrides`), taken to its first tranche released."""
    (h,) = await enroll(client, sessions, tq, make_households(1, **({"beneficiary_group": "poor"} | overrides)))
    await release_first_tranche(client, sessions, h)
    return h


async def payment_rows(sessions, code: str) -> list[tuple]:
    async with sessions() as s:
        rows = await s.execute(
            select(payments.c.attempt, payments.c.status, payments.c.amount)
            .where(payments.c.household_code == code)
            .order_by(payments.c.attempt)
        )
        return [tuple(r) for r in rows]


async def posts(sessions, code: str) -> int:
    async with sessions() as s:
        return await s.scalar(
            select(func.count()).where(
                ledger_transfers.c.household_code == code, ledger_transfers.c.kind == "post_pending"
            )
        )


async def test_a_failed_payment_is_sent_again_and_paid_once(client, sessions, settings, tmp_path):
    # The bank process fails every first attempt (fail rate 1) and pays the retry.
    async with paying_through(client, sessions, settings, tmp_path, fail_rate=1.0) as (bank, tq):
        h = await released(client, sessions, tq, support_type="new_build")
        await _failed_then_paid(client, sessions, bank, h)


async def _failed_then_paid(client, sessions, bank, h):
    state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
    steps = [e.step for e in state.timeline[-3:]]
    assert steps == [Step.RELEASE_PAYOUT, Step.PAYMENT_FAILED, Step.PAYMENT_CONFIRMED]
    assert FAIL_REASON in state.timeline[-2].reason and "attempt 2" in state.timeline[-2].reason
    assert state.paid == 42_000_000 and state.tranches[0].attempts == 2
    assert await payment_rows(sessions, h.code) == [(1, "failed", 42_000_000), (2, "confirmed", 42_000_000)]
    paid = [(p["attempt"], p["state"], p["amount"]) for p in await bank.statement(h.code)]
    assert paid == [(1, "failed", 42_000_000), (2, "confirmed", 42_000_000)]  # what the bank paid: once
    posted = await posts(sessions, h.code)
    assert posted == len(state.tranches[0].pieces)

    # The channel's notice again, or a forged one: the workflow asks the channel and moves nothing.
    handle = client.get_workflow_handle(workflow_id_for(h.code))
    signals = sum(
        [e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED async for e in handle.fetch_history_events()]
    )
    await handle.signal(HouseholdWorkflow.payment_result, PaymentNotice(payment_id=state.tranches[0].payment_id))
    await handle.signal(HouseholdWorkflow.payment_result, PaymentNotice(payment_id=f"{h.code}-A1-T2-1"))
    await wait_until(lambda: _handled(client, h.code, signals + 2, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED))
    after = await household_state(client, h.code)
    assert len(after.timeline) == len(state.timeline) and after.paid == state.paid
    assert await posts(sessions, h.code) == posted


async def test_a_payment_failing_every_attempt_goes_back_to_finance_and_is_paid_after_reauthorisation(
    client, sessions, settings, tmp_path
):
    # Every tranche's first two attempts fail; the third (after Finance authorises again) is paid.
    async with paying_through(client, sessions, settings, tmp_path, fail_rate=1.0, fail_attempts=2) as (bank, tq):
        h = await released(client, sessions, tq, support_type="repair")
        await _returned_then_paid(client, sessions, bank, h)


async def _returned_then_paid(client, sessions, bank, h):
    state = await wait_until(tranche_is(client, h.code, TrancheStatus.DUE))
    # Two attempts (policy payment_max_attempts), then returned to Finance: due again, nobody's authorisation.
    assert (state.tranches[0].attempts, state.tranches[0].authorised_by, state.paid) == (2, None, 0)
    assert "returned to Finance" in state.timeline[-1].reason
    async with sessions() as s:
        told = [
            tuple(r)
            for r in await s.execute(
                select(outbox.c.kind, outbox.c.recipient).where(
                    outbox.c.household_code == h.code, outbox.c.subject.contains("không thành công")
                )
            )
        ]
    assert told == [("task", f"Sở Tài chính ({h.district} / {h.commune})")]  # Finance told once, by its task
    await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.nong", tranche=1, evidence=["D2"])
    await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U2"])
    state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
    assert state.paid == 21_000_000
    assert [r[1] for r in await payment_rows(sessions, h.code)] == ["failed", "failed", "confirmed"]
    assert [(p["attempt"], p["state"]) for p in await bank.statement(h.code)] == [
        (1, "failed"),
        (2, "failed"),
        (3, "confirmed"),
    ]


async def test_a_channel_that_stays_silent_is_escalated_to_finance_and_nothing_is_paid_or_resent(
    skipping_env, sessions, settings, tmp_path
):
    async with paying_through(skipping_env.client, sessions, settings, tmp_path, hold=True) as (bank, tq):
        h = await released(skipping_env.client, sessions, tq)  # the bank accepts, never answers
        await _silent(skipping_env, sessions, bank, h)


async def _silent(skipping_env, sessions, bank, h):
    client = skipping_env.client

    async def escalations():
        async with sessions() as s:
            rows = await s.execute(
                select(outbox.c.recipient, outbox.c.subject).where(
                    outbox.c.household_code == h.code, outbox.c.kind == "payment_overdue"
                )
            )
            return [tuple(r) for r in rows]

    await skipping_env.sleep(timedelta(hours=71))
    # Observed, not assumed: the workflow has asked the bank as often as its policy says by then (each answer
    # "pending"), so its clock has passed those 71 hours' inquiries, and it has escalated nothing.
    policy = await _policy_of(client, sessions, h.code)
    asked = max(n for n in range(1, 100) if policy.inquiry_offset_minutes(n) < 71 * 60)
    state = await wait_until(lambda: _inquired(client, h.code, asked))
    assert state.tranches[0].inquiries == asked and state.payment_escalations == 0
    assert await escalations() == []
    await skipping_env.sleep(timedelta(hours=2))  # policy: 72 hours to confirm
    (first,) = await wait_until(escalations)
    assert first[0].startswith("Sở Tài chính") and h.code in first[1]
    state = await household_state(client, h.code)
    assert state.tranches[0].status is TrancheStatus.RELEASED and state.paid == 0
    assert state.payment_escalations == 1
    async with sessions() as s:
        overdue = await s.scalar(select(payments.c.overdue).where(payments.c.household_code == h.code))
    assert overdue is True
    assert [p["state"] for p in await bank.statement(h.code)] == ["pending"]  # a timeout never sends the money again
    await client.get_workflow_handle(workflow_id_for(h.code)).terminate("test over")


async def test_a_lost_callback_is_recovered_by_the_first_status_inquiry_within_minutes(
    skipping_env, sessions, settings, tmp_path
):
    """The bank pays and calls back a receiver that is down: the engine asks the bank itself two minutes
    after release (policy payment_inquiry_minutes), records the payment, and the bank has paid once."""
    client = skipping_env.client
    with bank_process(tmp_path / "bank") as bank:
        async with HttpBank(bank.url, secret=bank.secret, callback_url=f"http://127.0.0.1:{free_port()}/x") as channel:
            async with running_worker(client, sessions, settings, channel=channel) as tq:
                h = await released(client, sessions, tq)
                await wait_until(lambda: _answered(bank, h.code))
                state = await household_state(client, h.code)
                assert state.tranches[0].status is TrancheStatus.RELEASED, "no callback arrived: not paid yet"
                await skipping_env.sleep(timedelta(minutes=3))
                state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
                assert state.tranches[0].inquiries == 1 and state.payment_escalations == 0
                assert [(p["attempt"], p["state"]) for p in await bank.statement(h.code)] == [(1, "confirmed")]
                assert await posts(sessions, h.code) == len(state.tranches[0].pieces)
                await client.get_workflow_handle(workflow_id_for(h.code)).terminate("test over")


async def test_an_instruction_the_bank_lost_is_sent_again_under_the_same_id_and_paid_once(
    skipping_env, sessions, settings, tmp_path
):
    """The bank is restored without the instruction (its book lost): the inquiry finds it unknown, sends the
    same instruction again under the same end-to-end id, and the bank pays it once."""
    client = skipping_env.client
    async with paying_through(client, sessions, settings, tmp_path, hold=True) as (bank, tq):
        h = await released(client, sessions, tq)
        (sent,) = await bank.statement(h.code)
        bank.kill()
        shutil.rmtree(bank.state)
        bank.start(hold=False)
        assert await bank.statement(h.code) == []
        await skipping_env.sleep(timedelta(minutes=3))
        state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
        (again,) = await bank.statement(h.code)
        assert (again["payment_id"], again["attempt"], again["state"]) == (sent["payment_id"], 1, "confirmed")
        assert state.tranches[0].attempts == 1 and state.tranches[0].payment_id == sent["payment_id"]
        assert await payment_rows(sessions, h.code) == [(1, "confirmed", sent["amount"])]
        await client.get_workflow_handle(workflow_id_for(h.code)).terminate("test over")


async def _policy_of(client, sessions, code: str) -> WorkflowPolicy:
    version = (await household_state(client, code)).policy_version
    async with sessions() as s:
        return WorkflowPolicy.model_validate(
            await s.scalar(select(workflow_policies.c.document).where(workflow_policies.c.version == version))
        )


async def _inquired(client, code: str, n: int):
    """The household's state once its first tranche has been asked about `n` times or more."""
    state = await household_state(client, code)
    return state if state.tranches[0].inquiries >= n else None


async def _answered(bank, code: str) -> bool:
    return [p["state"] for p in await bank.statement(code)] == ["confirmed"]


async def test_a_payment_answer_meeting_a_step_committed_before_a_crash_waits_and_the_workflow_survives(
    skipping_env, sessions, settings, tmp_path
):
    """A worker crashed after committing an officer's step whose update never reached the history; the
    bank's callback then asks for the same sequence number. The answer is not recorded yet (the workflow
    does not fail), the officer's retry takes the step as committed, and the next inquiry records the
    payment after it: one chain, one payment."""
    client = skipping_env.client
    async with paying_through(client, sessions, settings, tmp_path, hold=True) as (bank, tq):
        h = await released(client, sessions, tq)
        seq = len((await household_state(client, h.code)).timeline) + 1
        commune = sample.commune_user(h.district, h.commune)
        evidence = [f"BC-HOAN-THANH/{h.code}"]
        committed = await _record(
            sessions, h, seq, Step.COMPLETE_CONSTRUCTION, Stage.CONSTRUCTION, Stage.ACCEPTANCE, commune
        )
        signed = sign_input(
            FRONT_DOOR,
            CompleteConstructionInput(actor=committed.actor, evidence=evidence),
            workflow_id=h.workflow_id,
            step=Step.COMPLETE_CONSTRUCTION.value,
            user_id=committed.actor.user_id,
        )
        committed = committed.model_copy(
            update={"evidence": evidence, "assertion": signed.assertion, "signed_input": signed_input(signed)}
        )
        await HouseholdActivities(sessions).record_transition(committed)
        bank.kill()
        bank.start(hold=False)  # answers now, and calls back
        await wait_until(lambda: _answered(bank, h.code))
        await wait_until(lambda: _handled(client, h.code, 1, EventType.EVENT_TYPE_MARKER_RECORDED))
        state = await household_state(client, h.code)
        assert state.tranches[0].status is TrancheStatus.RELEASED and len(state.timeline) == seq - 1
        result = await take_step(client, sessions, h.code, Step.COMPLETE_CONSTRUCTION, commune, evidence=evidence)
        assert (result.seq, result.to_stage, result.at) == (seq, Stage.ACCEPTANCE, committed.at)
        await skipping_env.sleep(timedelta(minutes=10))
        state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
        assert [e.step for e in state.timeline[seq - 1 :]] == [Step.COMPLETE_CONSTRUCTION, Step.PAYMENT_CONFIRMED]
        assert [(p["attempt"], p["state"]) for p in await bank.statement(h.code)] == [(1, "confirmed")]
        await client.get_workflow_handle(workflow_id_for(h.code)).terminate("test over")


async def _handled(client, code: str, signals: int, then: EventType.ValueType) -> bool:
    """The household's history holds `signals` signals or more, and `then` after the last of them: the
    workflow has run its handler (a completed workflow task, or the record of a step)."""
    kinds = [e.event_type async for e in client.get_workflow_handle(workflow_id_for(code)).fetch_history_events()]
    at = [i for i, kind in enumerate(kinds) if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    return len(at) >= signals and then in kinds[at[-1] :]


async def test_a_settle_retried_after_its_commit_hands_back_the_answer_the_audit_row_keeps(
    client, sessions, settings, tmp_path
):
    """Guarantee (a chaos run found it broken: assertion_differs): a worker killed after `settle_answer`
    committed and before its marker reached the history runs the local activity again. The bank signs its
    answer afresh (a new one-time id), yet the step is the one recorded: the history must get the signed
    answer the audit row keeps, or the history and the audit log disagree on who said the tranche was paid."""
    async with paying_through(client, sessions, settings, tmp_path) as (bank, tq):
        h = await released(client, sessions, tq)
        state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
        async with sessions() as s:
            row = (
                await s.execute(
                    select(audit_log).where(
                        audit_log.c.household_code == h.code, audit_log.c.step == "payment_confirmed"
                    )
                )
            ).one()
        t = state.tranches[0]
        retry = SettleRequest(
            workflow_id=h.workflow_id,
            household_code=h.code,
            seq=row.seq,
            stage=Stage(row.from_stage),
            at=row.occurred_at,
            tranche=1,
            attempts=1,
            payment_id=t.payment_id,
            transfer_ids=[p.transfer_id for p in t.pieces],
            retry=True,
            finance_agency="Sở Tài chính",
            support_type=h.support_type,
            beneficiary_group=h.beneficiary_group,
        )
        env = ActivityEnvironment()
        env.info = dataclasses.replace(
            env.info, is_local=True, workflow_id=h.workflow_id, workflow_type="HouseholdWorkflow"
        )
        async with HttpBank(bank.url, secret=bank.secret) as channel:
            fresh = await channel.status(t.payment_id)
            assert fresh.assertion.nonce != row.assertion["nonce"]  # the bank signs every answer anew
            acts = PaymentActivities(
                sessions, channel, settings.payment_channel_user, record=HouseholdActivities(sessions)._record
            )
            again = await env.run(acts.settle_answer, retry)
        assert again.outcome.replayed and again.outcome.audit_id == row.id
        assert again.outcome.record.assertion.model_dump(mode="json") == row.assertion
        assert again.outcome.record.signed_input == row.signed_input
        assert again.status.state == "confirmed" and again.status.assertion.nonce == row.assertion["nonce"]
        assert await posts(sessions, h.code) == len(t.pieces)  # nothing posted twice
