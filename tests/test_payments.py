"""The payment channel: confirmation by event, failures retried or returned to Finance, never lost and
never paid twice; a silent channel escalates on the time-skipping server."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from core.temporal import signaller
from db.schema import ledger_transfers, outbox, payments
from finance.channel import SimulatedBank
from models.finance import PaymentNotice, TrancheStatus
from models.household import Step, workflow_id_for
from operations import sample
from operations.actions import household_state, take_step
from operations.demo import drive_one
from tests.conftest import enroll, make_households, running_worker, tranche_is, wait_until
from workflows.household import HouseholdWorkflow


async def release_first_tranche(client, sessions, h) -> None:
    await drive_one(client, sessions, h, payouts=False)
    await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
    await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U"])


async def payment_rows(sessions, code: str) -> list[tuple]:
    async with sessions() as s:
        rows = await s.execute(select(payments.c.attempt, payments.c.status, payments.c.amount)
                               .where(payments.c.household_code == code).order_by(payments.c.attempt))  # fmt: skip
        return [tuple(r) for r in rows]


async def posts(sessions, code: str) -> int:
    async with sessions() as s:
        return await s.scalar(select(func.count()).where(ledger_transfers.c.household_code == code,
                                                         ledger_transfers.c.kind == "post_pending"))  # fmt: skip


async def test_a_failed_payment_is_sent_again_and_paid_once(client, sessions, settings):
    bank = SimulatedBank(delay=0.05, notify=signaller(client),
                         decide=lambda i: ("failed", "tài khoản bị khóa") if i.attempt == 1 else ("confirmed", None))
    async with running_worker(client, sessions, settings, channel=bank) as tq:
        (h,) = await enroll(client, sessions, tq,
                            make_households(1, support_type="new_build", beneficiary_group="poor"))  # fmt: skip
        await release_first_tranche(client, sessions, h)
        state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
        steps = [e.step for e in state.timeline[-3:]]
        assert steps == [Step.RELEASE_PAYOUT, Step.PAYMENT_FAILED, Step.PAYMENT_CONFIRMED]
        assert "tài khoản bị khóa" in state.timeline[-2].reason and "attempt 2" in state.timeline[-2].reason
        assert state.paid == 42_000_000 and state.tranches[0].attempts == 2
        assert await payment_rows(sessions, h.code) == [(1, "failed", 42_000_000), (2, "confirmed", 42_000_000)]
        assert bank.submissions == 2
        posted = await posts(sessions, h.code)
        assert posted >= 1

        # The channel's notice again, or a forged one: the workflow asks the channel and moves nothing.
        handle = client.get_workflow_handle(workflow_id_for(h.code))
        await handle.signal(HouseholdWorkflow.payment_result, PaymentNotice(payment_id=state.tranches[0].payment_id))
        await handle.signal(HouseholdWorkflow.payment_result, PaymentNotice(payment_id=f"{h.code}-A1-T2-1"))
        await asyncio.sleep(0.3)
        after = await household_state(client, h.code)
        assert len(after.timeline) == len(state.timeline) and after.paid == state.paid
        assert await posts(sessions, h.code) == posted


async def test_a_payment_failing_every_attempt_goes_back_to_finance_and_is_paid_after_reauthorisation(
    client, sessions, settings
):
    failing = {"on": True}
    bank = SimulatedBank(delay=0.05, notify=signaller(client),
                         decide=lambda i: ("failed", "sai số tài khoản") if failing["on"] else ("confirmed", None))
    async with running_worker(client, sessions, settings, channel=bank) as tq:
        (h,) = await enroll(client, sessions, tq,
                            make_households(1, support_type="repair", beneficiary_group="poor"))  # fmt: skip
        await release_first_tranche(client, sessions, h)
        state = await wait_until(tranche_is(client, h.code, TrancheStatus.DUE))
        # Two attempts (policy payment_max_attempts), then returned to Finance: due again, nobody's authorisation.
        assert (state.tranches[0].attempts, state.tranches[0].authorised_by, state.paid) == (2, None, 0)
        assert "returned to Finance" in state.timeline[-1].reason
        async with sessions() as s:
            told = await s.scalar(
                select(func.count()).where(outbox.c.household_code == h.code,
                                           outbox.c.subject.contains("không thành công"))
            )  # fmt: skip
        assert told >= 1
        failing["on"] = False
        await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.nong", tranche=1, evidence=["D2"])
        await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1,
                        evidence=["U2"])  # fmt: skip
        state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
        assert state.paid == 21_000_000
        assert [r[1] for r in await payment_rows(sessions, h.code)] == ["failed", "failed", "confirmed"]


async def test_a_channel_that_stays_silent_is_escalated_to_finance_and_nothing_is_paid_or_resent(
    skipping_env, sessions, settings
):
    client = skipping_env.client
    bank = SimulatedBank(delay=0.01, notify=signaller(client), decide=lambda i: ("pending", None))
    async with running_worker(client, sessions, settings, channel=bank) as tq:
        (h,) = await enroll(client, sessions, tq, make_households(1, beneficiary_group="poor"))
        await release_first_tranche(client, sessions, h)

        async def escalations():
            async with sessions() as s:
                rows = await s.execute(select(outbox.c.recipient, outbox.c.subject)
                                       .where(outbox.c.household_code == h.code, outbox.c.kind == "payment_overdue"))
                return [tuple(r) for r in rows]  # fmt: skip

        await skipping_env.sleep(timedelta(hours=71))
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
        assert bank.submissions == 1  # a timeout never sends the money again
        await client.get_workflow_handle(workflow_id_for(h.code)).terminate("test over")
