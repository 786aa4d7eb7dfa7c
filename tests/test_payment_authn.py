"""Payments cannot be misused, even by someone who reaches Temporal: an instruction is built from PostgreSQL for
a release recorded there, whatever a caller says; the bank's answer is recorded only as the bank signed it,
asked and recorded in one local activity; an answer completed by hand, tampered with or signed by another key
posts nothing. Against the real dev server and a bank process."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.channel_answers import verify_channel_record
from activities.household import HouseholdActivities
from core import signing
from core.errors import Refusal
from db import users
from db.schema import audit_log, household_tranches, payments
from finance.channel import HttpBank
from models import MoneyOp, Step, TransitionRecord
from models.assertion import CHANNEL, digest_of
from models.finance import ChannelStatus, TrancheStatus
from models.household import workflow_id_for
from operations import sample
from operations.actions import household_state
from operations.signing_keys import public_keys
from tests.conftest import (
    FRONT_DOOR,
    TEST_BANK_SIGNING_FILE,
    bank_process,
    callback_receiver,
    drive_one,
    enroll,
    make_households,
    running_worker,
    take_step,
    tranche_is,
    wait_until,
)
from tests.test_payments import _handled, paying_through, posts, release_first_tranche, released
from workflows.household import HouseholdWorkflow

BANK_RING = signing.read_ring(TEST_BANK_SIGNING_FILE)
ROGUE = signing.new_ring("rogue-bank")  # a key nobody registered


@workflow.defn(name="Intruder", sandboxed=False)
class Intruder:
    """Someone else's workflow, scheduling the engine's activities on the engine's task queue."""

    @workflow.run
    async def run(self, args: list) -> str:
        name, arg, task_queue = args
        try:
            await workflow.execute_activity(
                name,
                arg,
                task_queue=task_queue,
                start_to_close_timeout=timedelta(seconds=20),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            return getattr(err.cause, "type", None) or str(err.cause)
        return "done"


async def intrude(client, task_queue: str, name: str, arg) -> str:
    """Run the Intruder on a queue of its own against the engine's `task_queue`; returns its activity's refusal."""
    own = f"intruder-{uuid.uuid4()}"
    async with Worker(client, task_queue=own, workflows=[Intruder], workflow_runner=UnsandboxedWorkflowRunner()):
        return await client.execute_workflow(
            Intruder.run, [name, arg, task_queue], id=f"intruder-{uuid.uuid4()}", task_queue=own
        )


async def book(sessions, code: str) -> tuple[list[tuple], list[tuple], int]:
    """The household's payments, tranches (status) and audit rows in PostgreSQL."""
    async with sessions() as s:
        pays = [
            tuple(r)
            for r in await s.execute(
                select(payments.c.payment_id, payments.c.amount, payments.c.payee, payments.c.status)
                .where(payments.c.household_code == code)
                .order_by(payments.c.payment_id)
            )
        ]
        tranches = [
            tuple(r)
            for r in await s.execute(
                select(household_tranches.c.tranche, household_tranches.c.status)
                .where(household_tranches.c.household_code == code)
                .order_by(household_tranches.c.tranche)
            )
        ]
        rows = await s.scalar(select(func.count()).where(audit_log.c.household_code == code))
    return pays, tranches, rows


async def test_a_foreign_workflow_scheduling_submit_payment_gets_nothing_sent(client, sessions, settings, tmp_path):
    async with paying_through(client, sessions, settings, tmp_path, hold=True) as (bank, tq):
        h = await released(client, sessions, tq)
        (other,) = await enroll(client, sessions, tq, make_households(1))  # not released
        (sent,) = await bank.statement()
        before = await book(sessions, h.code)
        forged = {
            "workflow_id": h.workflow_id,
            "household_code": h.code,
            "tranche": 1,
            "attempt": 1,
            "amount": 1,
            "payee": "Kẻ Mạo Danh",
            "released_by": "kb.tinh",
        }
        refused = [
            (f"{h.code}-A1-T1-2", h.code),  # an attempt nobody is due
            (f"{h.code}-A1-T2-1", h.code),  # a tranche not released
            (f"{h.code}-A2-T1-1", h.code),  # an allocation that never was
            (f"{other.code}-A1-T1-1", other.code),  # a household with no release at all
            (f"{other.code}-A1-T1-1", h.code),  # another household's id under this one
            ("INVENTED", h.code),
        ]
        for payment_id, code in refused:
            arg = forged | {"payment_id": payment_id, "household_code": code}
            assert await intrude(client, tq, "submit_payment", arg) == "NoRecordedRelease", payment_id
        # The id that was released, with another amount and payee: refused, they are not the engine's terms.
        forged_terms = forged | {"payment_id": sent["payment_id"]}
        assert await intrude(client, tq, "submit_payment", forged_terms) == "InstructionMismatch"
        # Without terms of its own the request gets the instruction PostgreSQL has, sent again under its id.
        bare = {"payment_id": sent["payment_id"], "household_code": h.code}
        assert await intrude(client, tq, "submit_payment", bare) == "done"
        assert await bank.statement() == [sent]  # the bank holds the one real instruction, as it was
        tranche = (await household_state(client, h.code)).tranches[0]
        assert (sent["amount"], sent["payee"]) == (tranche.amount, h.head_of_household)
        assert await book(sessions, h.code) == before
        assert (await book(sessions, other.code))[0] == []
        # Nor can it have an answer asked and recorded: that runs only as the household's local activity.
        settle = {
            "workflow_id": h.workflow_id,
            "household_code": h.code,
            "seq": 99,
            "stage": "construction",
            "at": datetime.now(UTC).isoformat(),
            "tranche": 1,
            "attempts": 1,
            "payment_id": sent["payment_id"],
            "transfer_ids": [],
            "retry": True,
            "finance_agency": "x",
            "support_type": h.support_type.value,
            "beneficiary_group": h.beneficiary_group.value,
        }
        assert await intrude(client, tq, "settle_answer", settle) == "Unauthenticated"
        state = await household_state(client, h.code)
        assert state.tranches[0].status is TrancheStatus.RELEASED and state.paid == 0
        assert await posts(sessions, h.code) == 0
        await client.get_workflow_handle(h.workflow_id).terminate("test over")


class Tampering:
    """The bank as a channel, its signed answers changed on the way by `tamper` (None: passed as they are)."""

    def __init__(self, bank: HttpBank) -> None:
        self._bank, self.name, self.tamper = bank, bank.name, None

    async def submit(self, instruction) -> None:
        await self._bank.submit(instruction)

    async def status(self, payment_id: str) -> ChannelStatus:
        s = await self._bank.status(payment_id)
        return self.tamper(s) if self.tamper and s.assertion else s


def more_money(s: ChannelStatus) -> ChannelStatus:
    return s.model_copy(update={"amount": s.amount + 1_000_000, "answer": s.answer | {"amount": s.amount + 1_000_000}})


def signed_by(ring):
    def resign(s: ChannelStatus) -> ChannelStatus:
        a = s.assertion
        return s.model_copy(
            update={
                "assertion": ring.sign(
                    workflow_id=a.workflow_id, step=a.step, user_id=a.user_id, input_digest=digest_of(s.answer)
                )
            }
        )

    return resign


def unsigned(s: ChannelStatus) -> ChannelStatus:
    return s.model_copy(update={"assertion": None, "answer": None})


async def test_a_tampered_or_foreign_signed_bank_answer_posts_nothing_and_the_true_one_pays(
    client, sessions, settings, tmp_path
):
    with bank_process(tmp_path / "bank") as bank:
        async with (
            callback_receiver(client, bank.secret) as url,
            HttpBank(bank.url, secret=bank.secret, callback_url=url) as http,
        ):
            channel = Tampering(http)
            channel.tamper = more_money
            async with running_worker(client, sessions, settings, channel=channel) as tq:
                (h,) = await enroll(client, sessions, tq, make_households(1, beneficiary_group="poor"))
                await release_first_tranche(client, sessions, h)
                await wait_until(lambda: _handled(client, h.code, 1, EventType.EVENT_TYPE_MARKER_RECORDED))
                before = await book(sessions, h.code)
                assert before[0][0][3] == "sent" and before[1][0] == (1, "released")
                handle = client.get_workflow_handle(workflow_id_for(h.code))
                state = await household_state(client, h.code)
                for n, tamper in enumerate((signed_by(ROGUE), signed_by(FRONT_DOOR), unsigned), start=2):
                    channel.tamper = tamper
                    await handle.signal(HouseholdWorkflow.payment_result, {"payment_id": state.tranches[0].payment_id})
                    await wait_until(lambda n=n: _handled(client, h.code, n, EventType.EVENT_TYPE_MARKER_RECORDED))
                after = await household_state(client, h.code)
                assert after.tranches[0].status is TrancheStatus.RELEASED and after.paid == 0
                assert len(after.timeline) == len(state.timeline)
                assert await book(sessions, h.code) == before and await posts(sessions, h.code) == 0
                channel.tamper = None  # the bank's own answer, as it signed it
                await handle.signal(HouseholdWorkflow.payment_result, {"payment_id": state.tranches[0].payment_id})
                paid = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
                assert paid.timeline[-1].step is Step.PAYMENT_CONFIRMED and paid.paid > 0
                assert await posts(sessions, h.code) == len(paid.tranches[0].pieces)
                async with sessions() as s:
                    row = (
                        await s.execute(
                            select(audit_log.c.assertion, audit_log.c.signed_input)
                            .where(audit_log.c.household_code == h.code)
                            .order_by(audit_log.c.seq.desc())
                            .limit(1)
                        )
                    ).one()
                assert row.signed_input["state"] == "confirmed" and row.assertion["step"] == "payment_confirmed"
                assert row.assertion["key_id"] == BANK_RING.active


async def _confirmation(client, sessions, h, *, answer: dict | None = None, ring=BANK_RING, assertion=True):
    """A payment_confirmed record as the pre-settle_answer path builds it from a check_payment result."""
    state = await household_state(client, h.code)
    t = state.tranches[0]
    async with sessions() as s:
        actor = await users.require_actor(s, "kenh.thanhtoan")
    answer = answer or {
        "payment_id": t.payment_id,
        "state": "confirmed",
        "amount": t.amount,
        "payee": h.head_of_household,
        "bank_ref": "SIMFORGED",
        "reason": None,
        "tranche": 1,
        "attempt": 1,
    }
    a = (
        ring.sign(
            workflow_id=h.workflow_id, step="payment_confirmed", input_digest=digest_of(answer), user_id=actor.user_id
        )
        if assertion
        else None
    )
    seq = len(state.timeline) + 1
    return TransitionRecord(
        idempotency_key=f"{h.workflow_id}#{seq}",
        workflow_id=h.workflow_id,
        household_code=h.code,
        seq=seq,
        step=Step.PAYMENT_CONFIRMED,
        from_stage=state.stage,
        to_stage=state.stage,
        at=datetime.now(UTC),
        actor=actor,
        evidence=["SIMFORGED"],
        money=MoneyOp.POST,
        transfer_ids=[p.transfer_id for p in t.pieces],
        tranche=1,
        tranche_updates={1: "paid"},
        payment_id=t.payment_id,
        support_type=h.support_type,
        beneficiary_group=h.beneficiary_group,
        assertion=a,
        signed_input=answer if a else None,
    )


async def test_a_hand_completed_confirmation_without_the_banks_signature_posts_nothing(
    client, sessions, settings, tmp_path
):
    """What a check_payment completed by hand ("confirmed") would have the old path record: refused unless the
    bank signed exactly that answer; the ledger and the tranches do not move."""
    async with paying_through(client, sessions, settings, tmp_path, hold=True) as (bank, tq):
        h = await released(client, sessions, tq)
        before = await book(sessions, h.code)
        good = await _confirmation(client, sessions, h)
        forged = [
            await _confirmation(client, sessions, h, assertion=False),  # no signature at all
            await _confirmation(client, sessions, h, ring=ROGUE),  # a key nobody registered
            await _confirmation(client, sessions, h, ring=FRONT_DOOR),  # a key of the officers, not the channel
            good.model_copy(update={"signed_input": good.signed_input | {"amount": good.signed_input["amount"] + 1}}),
            good.model_copy(update={"evidence": ["SIMOTHER"]}),  # not the reference the bank signed
            await _confirmation(client, sessions, h, answer=good.signed_input | {"amount": 1}),  # signed, not as sent
            good.model_copy(update={"payment_id": f"{h.code}-A1-T2-1"}),  # another payment's answer
        ]
        for rec in forged:
            with pytest.raises(ApplicationError) as refused:
                await HouseholdActivities(sessions).record_transition(rec)
            assert refused.value.type == "Unauthenticated", refused.value.message
        assert await book(sessions, h.code) == before and await posts(sessions, h.code) == 0
        assert [p["state"] for p in await bank.statement(h.code)] == ["pending"]
        await client.get_workflow_handle(h.workflow_id).terminate("test over")


@pytest.mark.servers  # starts servers of its own
async def test_the_bank_signs_each_final_answer_afresh_and_only_those(tmp_path):
    with bank_process(tmp_path / "bank", delay=0.2) as bank:
        async with HttpBank(bank.url, secret=bank.secret) as channel:
            from tests.test_bank import instruction

            instr = instruction()
            assert (await channel.status(instr.payment_id)).assertion is None  # unknown: nothing to sign
            await channel.submit(instr)
            pending = await channel.status(instr.payment_id)
            assert pending.state == "pending" and pending.assertion is None

            async def answered():
                s = await channel.status(instr.payment_id)
                return s if s.state == "confirmed" else None

            first = await wait_until(answered)
            again = await channel.status(instr.payment_id)
    keys = signing.TrustedKeys.of(public_keys(BANK_RING, CHANNEL, datetime.now(UTC) - timedelta(hours=1)))
    for s in (first, again):
        keys.verify(
            s.assertion,
            workflow_id=instr.workflow_id,
            step="payment_confirmed",
            input_digest=digest_of(s.answer),
            user_id="kenh.thanhtoan",
            holder=CHANNEL,
            now=datetime.now(UTC),
        )
        assert s.answer == {
            "payment_id": instr.payment_id,
            "state": "confirmed",
            "amount": instr.amount,
            "payee": instr.payee,
            "bank_ref": s.bank_ref,
            "reason": None,
            "tranche": 1,
            "attempt": 1,
        }
        assert s.assertion.expires_at - s.assertion.issued_at == signing.STEP_TTL
    assert first.assertion.nonce != again.assertion.nonce


async def test_verify_channel_record_refuses_an_answer_not_valid_when_asked(client, sessions, settings, tmp_path):
    """Asked now (settle_answer), an expired answer is refused; judged at its issue (a restore), it holds."""
    async with paying_through(client, sessions, settings, tmp_path, hold=True) as (_, tq):
        h = await released(client, sessions, tq)
        rec = await _confirmation(client, sessions, h)
        async with sessions() as s:
            await verify_channel_record(s, rec)
            await verify_channel_record(s, rec, now=datetime.now(UTC))
            with pytest.raises(Refusal, match="expired"):
                await verify_channel_record(s, rec, now=datetime.now(UTC) + timedelta(hours=1))
        await client.get_workflow_handle(h.workflow_id).terminate("test over")


async def test_an_escalation_sends_again_what_postgresql_has_not_what_it_is_given(client, sessions, settings, tmp_path):
    """The bank lost a released instruction; an escalation naming it with another amount and payee sends the
    instruction as PostgreSQL has it (same id), and one naming an id nobody released sends nothing."""
    from activities.payments import PaymentActivities
    from models.finance import EscalationRecord, PaymentInstruction

    async with paying_through(client, sessions, settings, tmp_path, hold=True) as (bank, tq):
        h = await released(client, sessions, tq)
        (sent,) = await bank.statement(h.code)
        bank.kill()
        shutil.rmtree(bank.state)
        bank.start()  # its book lost: it knows nothing of the instruction
        forged = PaymentInstruction(
            payment_id=sent["payment_id"],
            workflow_id=h.workflow_id,
            household_code=h.code,
            tranche=1,
            attempt=1,
            amount=1,
            payee="Kẻ Mạo Danh",
            released_by="kb.tinh",
        )
        async with HttpBank(bank.url, secret=bank.secret) as channel:
            act = PaymentActivities(sessions, channel, settings.payment_channel_user)
            nobody = forged.model_copy(update={"payment_id": f"{h.code}-A1-T2-1"})
            check = await act.escalate_payment(
                EscalationRecord(instruction=nobody, overdue_hours=80, escalation=1, finance_agency="Sở Tài chính")
            )
            assert check.status.state == "unknown" and await bank.statement(h.code) == []
            check = await act.escalate_payment(
                EscalationRecord(instruction=forged, overdue_hours=80, escalation=1, finance_agency="Sở Tài chính")
            )
        (again,) = await bank.statement(h.code)
        assert {k: again[k] for k in ("payment_id", "amount", "payee", "attempt")} == {
            k: sent[k] for k in ("payment_id", "amount", "payee", "attempt")
        }
        await client.get_workflow_handle(h.workflow_id).terminate("test over")


async def test_the_application_login_cannot_redirect_a_payment(client, sessions, settings, tmp_path):
    """As the application's role (no key): the payee cannot be changed at all, and a tranche's amount edited
    in the read model is not what gets sent: the instruction is refused, the bank receives nothing."""
    async with paying_through(client, sessions, settings, tmp_path) as (bank, tq):
        (h,) = await enroll(client, sessions, tq, make_households(1, beneficiary_group="poor"))
        await drive_one(client, sessions, h, payouts=False)
        await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
        with pytest.raises(DBAPIError, match="permission denied"):
            async with sessions() as s, s.begin():  # housing_app
                await s.execute(
                    text("UPDATE households SET head_of_household = 'Kẻ Mạo Danh' WHERE code = :c"), {"c": h.code}
                )
        async with sessions() as s, s.begin():
            await s.execute(
                text(
                    "UPDATE household_tranches SET amount = amount + 77000000 WHERE household_code = :c AND tranche = 1"
                ),
                {"c": h.code},
            )
        await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U"])
        await asyncio.sleep(1.5)  # the hand-over is tried (and refused) right after the release
        assert await bank.statement(h.code) == []
        assert await posts(sessions, h.code) == 0
        state = await household_state(client, h.code)
        assert state.tranches[0].status is TrancheStatus.RELEASED and state.paid == 0
        await client.get_workflow_handle(h.workflow_id).terminate("test over")
