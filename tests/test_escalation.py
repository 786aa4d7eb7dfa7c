"""Payment escalation beyond the first, on the time-skipping server: a released payment the channel has not
confirmed is escalated after each `payment_confirm_hours`; each escalation asks the channel and acts on what it
finds. An instruction the channel never received is sent again under the same id; one found confirmed is
recorded paid (one posting); one found failed is sent again or returned to Finance as `payment_max_attempts`
says (no posting).

The households run under a policy of the module's own with no status inquiries (`payment_inquiry_minutes`
empty) and one hour to confirm, so whatever happens to the payment happens at an escalation, not at an
inquiry. Everything runs in a scratch database of the module's own and through bank processes of its own.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from contextlib import asynccontextmanager
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from db import ledger
from db.policy import current_workflow_policy
from db.schema import ledger_transfers, outbox, payments
from finance.channel import HttpBank
from models.finance import TrancheStatus
from models.household import Stage, Step, workflow_id_for
from operations import sample
from operations.actions import household_state
from operations.seed import seed_demo
from runtime.stack import free_port
from tests.conftest import (
    bank_process,
    drive_one,
    enroll,
    make_households,
    running_worker,
    take_step,
    tranche_is,
    wait_until,
)
from workflows.household import ACTIVITY_TIMEOUT

M = 1_000_000
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


@pytest.fixture(scope="module")
async def db(scratch):
    """The scratch database seeded, with a budget of its own."""
    await seed_demo(scratch)
    async with scratch() as s, s.begin():
        await ledger.receive(s, key="escalation:topup", source="NS-TINH", amount=10_000_000_000, memo="tests")
    return scratch


async def escalating_only(sessions, **changes):
    """The policy in force with no status inquiries and one hour to confirm (and `changes`)."""
    async with sessions() as s:
        current = await current_workflow_policy(s, date.today())
    return current.model_copy(
        update={
            "version": f"{current.version}-escalation-{uuid.uuid4().hex[:6]}",
            "payment_inquiry_minutes": [],
            "payment_confirm_hours": 1,
            **changes,
        }
    )


@asynccontextmanager
async def paying(client, sessions, settings, path, *, callbacks: bool = True, **flags):
    """A bank process with these flags and a worker paying through it; with `callbacks` off the bank calls back
    a receiver that is down (every callback lost). Yields (bank, task queue)."""
    with bank_process(path, **flags) as bank:
        if callbacks:
            async with running_worker(client, sessions, settings, bank=bank) as tq:
                yield bank, tq
        else:
            dead = f"http://127.0.0.1:{free_port()}/callback"
            async with HttpBank(bank.url, secret=bank.secret, callback_url=dead) as channel:
                async with running_worker(client, sessions, settings, channel=channel) as tq:
                    yield bank, tq


async def released(client, sessions, tq, policy, h=None):
    """A household (poor, new build: tranche 1 is 42 M) under `policy`, to tranche 1 released."""
    (h,) = await enroll(
        client,
        sessions,
        tq,
        [h] if h else make_households(1, beneficiary_group="poor", support_type="new_build", programme=""),
        policy=policy,
    )
    await drive_one(client, sessions, h, payouts=False)
    await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
    result = await take_step(
        client, sessions, h.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U"]
    )
    assert result.payment_id == f"{h.code}-A1-T1-1"
    return h


async def overdue(sessions, code: str) -> list[str]:
    """The escalations' notices to Finance, their bodies in order."""
    async with sessions() as s:
        rows = await s.execute(
            select(outbox.c.recipient, outbox.c.body)
            .where(outbox.c.household_code == code, outbox.c.kind == "payment_overdue")
            .order_by(outbox.c.id)
        )
        return [f"{r.recipient} | {r.body}" for r in rows]


def has(n: int, read):
    async def check():
        rows = await read()
        return rows if len(rows) >= n else None

    return check


async def payment_rows(sessions, code: str) -> list[tuple]:
    p = payments.c
    async with sessions() as s:
        rows = await s.execute(
            select(p.payment_id, p.attempt, p.status, p.amount).where(p.household_code == code).order_by(p.attempt)
        )
        return [tuple(r) for r in rows]


async def ledger_of(sessions, code: str, kind: str) -> list[tuple[int, int]]:
    t = ledger_transfers.c
    async with sessions() as s:
        rows = await s.execute(
            select(t.pending_id, t.amount).where(t.household_code == code, t.kind == kind).order_by(t.id)
        )
        return [tuple(r) for r in rows]


async def statement(bank, code: str) -> list[tuple]:
    return [(p["payment_id"], p["attempt"], p["state"], p["amount"]) for p in await bank.statement(code)]


def pieces(state, n: int = 1) -> list[tuple[int, int]]:
    return sorted((p.transfer_id, p.amount) for p in state.tranches[n - 1].pieces)


async def still_released(client, code: str, escalations: int):
    state = await household_state(client, code)
    t = state.tranches[0]
    assert (t.status, state.paid, state.payment_escalations, t.inquiries) == (TrancheStatus.RELEASED, 0, escalations, 0)
    return state


async def test_an_instruction_the_channel_never_received_is_sent_again_at_the_second_escalation_under_its_id(
    skipping_env, db, settings, tmp_path
):
    """Guarantee: an escalation that finds the channel never received the instruction sends it again under the
    same payment id, and it is paid once. The first escalation (the bank holding it, unanswered) sends nothing
    again; then the bank loses its book; with no inquiries nothing is sent until the second escalation, which
    finds the id unknown and sends it again: the bank pays that one id once, one posting."""
    client = skipping_env.client
    async with paying(client, db, settings, tmp_path / "bank", hold=True) as (bank, tq):
        h = await released(client, db, tq, await escalating_only(db))
        pid = f"{h.code}-A1-T1-1"
        assert await statement(bank, h.code) == [(pid, 1, "pending", 42 * M)]

        await skipping_env.sleep(59 * MINUTE)
        await still_released(client, h.code, 0)
        assert await overdue(db, h.code) == []
        await skipping_env.sleep(2 * MINUTE)  # one hour to confirm: the first escalation
        (first,) = await wait_until(has(1, lambda: overdue(db, h.code)))
        assert first.startswith("Sở Tài chính") and "kênh trả lời: pending" in first and pid in first
        await wait_until(lambda: _escalated(client, h.code, 1))
        await still_released(client, h.code, 1)
        assert await statement(bank, h.code) == [(pid, 1, "pending", 42 * M)]  # nothing sent again

        bank.kill()
        shutil.rmtree(bank.state)
        bank.start(hold=False)  # restored without the instruction; answers what it gets from now on
        assert await statement(bank, h.code) == []
        await skipping_env.sleep(57 * MINUTE)
        await still_released(client, h.code, 1)
        assert await statement(bank, h.code) == []  # no inquiry: nothing sent before the second escalation
        await skipping_env.sleep(3 * MINUTE)  # two hours after release: the second escalation
        state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID), 30)
        notices = await overdue(db, h.code)
        assert len(notices) == 2 and "kênh trả lời: unknown" in notices[1]
        assert await statement(bank, h.code) == [(pid, 1, "confirmed", 42 * M)]
        t = state.tranches[0]
        assert (t.attempts, t.payment_id, state.payment_escalations, state.paid) == (1, pid, 2, 42 * M)
        assert await payment_rows(db, h.code) == [(pid, 1, "confirmed", 42 * M)]
        assert await ledger_of(db, h.code, "post_pending") == pieces(state)
        assert [e.step for e in state.timeline[-2:]] == [Step.RELEASE_PAYOUT, Step.PAYMENT_CONFIRMED]
        await client.get_workflow_handle(workflow_id_for(h.code)).terminate("test over")


async def test_a_second_escalation_that_finds_the_payment_confirmed_records_it_paid_once(
    skipping_env, db, settings, tmp_path
):
    """Guarantee: an escalation that finds the payment confirmed (its callback lost, no inquiry) records it:
    the tranche is paid, posted once. The first escalation finds it pending and changes nothing; the bank then
    pays, its callback is lost; the second escalation finds it confirmed."""
    client = skipping_env.client
    async with paying(client, db, settings, tmp_path / "bank", callbacks=False, hold=True) as (bank, tq):
        h = await released(client, db, tq, await escalating_only(db))
        pid = f"{h.code}-A1-T1-1"
        await skipping_env.sleep(61 * MINUTE)
        await wait_until(lambda: _escalated(client, h.code, 1))
        await still_released(client, h.code, 1)
        assert await statement(bank, h.code) == [(pid, 1, "pending", 42 * M)]

        bank.kill()
        bank.start(hold=False)  # the same book: it pays now, and its callback goes nowhere
        await wait_until(lambda: _states(bank, h.code, ["confirmed"]))
        await skipping_env.sleep(57 * MINUTE)
        await still_released(client, h.code, 1)  # no callback, no inquiry: not recorded yet
        assert await ledger_of(db, h.code, "post_pending") == []
        await skipping_env.sleep(3 * MINUTE)
        state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID), 30)
        assert (state.payment_escalations, state.paid, state.tranches[0].attempts) == (2, 42 * M, 1)
        last = state.timeline[-1]
        assert (last.step, last.user_id) == (Step.PAYMENT_CONFIRMED, sample.CHANNEL_USER)
        notices = await overdue(db, h.code)
        assert len(notices) == 2 and "kênh trả lời: confirmed" in notices[1]
        assert await statement(bank, h.code) == [(pid, 1, "confirmed", 42 * M)]
        assert await payment_rows(db, h.code) == [(pid, 1, "confirmed", 42 * M)]
        assert await ledger_of(db, h.code, "post_pending") == pieces(state)  # one posting per piece, once
        assert await ledger_of(db, h.code, "void_pending") == []
        await client.get_workflow_handle(workflow_id_for(h.code)).terminate("test over")


@pytest.mark.parametrize("max_attempts", [2, 1], ids=["sent-again", "returned-to-finance"])
async def test_an_escalation_that_finds_the_payment_failed_acts_as_the_policy_says(
    skipping_env, db, settings, tmp_path, max_attempts
):
    """Guarantee: an escalation that finds the payment failed (its callback lost, no inquiry) records the
    failure, then as `payment_max_attempts` says: with attempts left, sends a new attempt (a new id), which the
    next escalation finds confirmed: paid once, one posting; with none left, returns the tranche to Finance
    (due, nobody's authorisation): nothing posted, the reservation kept."""
    client = skipping_env.client
    (h,) = make_households(1, beneficiary_group="poor", support_type="new_build", programme="")
    async with paying(
        client, db, settings, tmp_path / "bank", callbacks=False, fail_match=(f"^{h.code}-",), fail_attempts=1
    ) as (bank, tq):
        await released(client, db, tq, await escalating_only(db, payment_max_attempts=max_attempts), h)
        first, second = f"{h.code}-A1-T1-1", f"{h.code}-A1-T1-2"
        await wait_until(lambda: _states(bank, h.code, ["failed"]))
        await skipping_env.sleep(59 * MINUTE)
        await still_released(client, h.code, 0)  # the failure is not known yet
        await skipping_env.sleep(2 * MINUTE)
        await wait_until(lambda: _escalated(client, h.code, 1))
        state = await wait_until(lambda: _stepped(client, h.code, Step.PAYMENT_FAILED))
        failed = state.timeline[-1]
        assert failed.user_id == sample.CHANNEL_USER
        if max_attempts == 1:
            t = state.tranches[0]
            assert (t.status, t.attempts, t.authorised_by, t.released_by, state.paid) == (
                TrancheStatus.DUE,
                1,
                None,
                None,
                0,
            )
            assert "returned to Finance" in failed.reason
            assert await statement(bank, h.code) == [(first, 1, "failed", 42 * M)]
            assert [r[:3] for r in await payment_rows(db, h.code)] == [(first, 1, "failed")]
            assert await ledger_of(db, h.code, "post_pending") == []
            assert await ledger_of(db, h.code, "void_pending") == []
            assert state.reserved == 60 * M  # both tranches still reserved, for Finance to authorise again
            await skipping_env.sleep(3 * HOUR)  # a returned tranche is not escalated again
            assert len(await overdue(db, h.code)) == 1
            assert (await household_state(client, h.code)).payment_escalations == 1
        else:
            t = state.tranches[0]
            assert (t.status, t.attempts, t.payment_id, t.escalations) == (TrancheStatus.RELEASED, 2, second, 0)
            assert "attempt 2" in failed.reason
            await wait_until(lambda: _states(bank, h.code, ["failed", "confirmed"]))
            await skipping_env.sleep(58 * MINUTE)  # an hour from the new attempt's release
            await still_released(client, h.code, 1)
            await skipping_env.sleep(3 * MINUTE)
            state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID), 30)
            assert [e.step for e in state.timeline[-3:]] == [
                Step.RELEASE_PAYOUT,
                Step.PAYMENT_FAILED,
                Step.PAYMENT_CONFIRMED,
            ]
            assert (state.payment_escalations, state.paid, state.tranches[0].attempts) == (2, 42 * M, 2)
            assert await statement(bank, h.code) == [(first, 1, "failed", 42 * M), (second, 2, "confirmed", 42 * M)]
            assert [r[:3] for r in await payment_rows(db, h.code)] == [(first, 1, "failed"), (second, 2, "confirmed")]
            assert await ledger_of(db, h.code, "post_pending") == pieces(state)
        await client.get_workflow_handle(workflow_id_for(h.code)).terminate("test over")


async def _escalated(client, code: str, n: int):
    state = await household_state(client, code)
    return state if state.payment_escalations >= n else None


async def _stepped(client, code: str, step: Step):
    state = await household_state(client, code)
    return state if state.timeline and state.timeline[-1].step is step else None


async def _states(bank, code: str, states: list[str]) -> bool:
    return [p["state"] for p in await bank.statement(code)] == states


# ------------------------------------------------------------------ the channel unreachable at an escalation
#
# An escalation asks the channel before it tells Finance, in one local activity run under the workflow's lock
# (workflows/household.py `_escalate`). It once let a transport error escape, so the activity was retried for as
# long as the channel was down: Finance was never told and every officer's step on the household waited for the
# lock. activities/payments.py `escalate_payment` now takes a channel it cannot reach as "pending" (named in
# Finance's notice), tells Finance, and lets the next escalation ask again.


async def test_an_escalation_while_the_channel_is_down_still_tells_finance(skipping_env, db, settings, tmp_path):
    """Guarantee (ARCHITECTURE.md, Money: "A release unanswered after payment_confirm_hours is escalated
    (Finance told, channel asked, ...)"): Finance is told of an overdue payment even when the channel cannot be
    reached at all — the most silent channel there is."""
    client = skipping_env.client
    async with paying(client, db, settings, tmp_path / "bank", hold=True) as (bank, tq):
        h = await released(client, db, tq, await escalating_only(db))
        bank.kill()  # the channel is down from now on
        try:
            # Just past the hour: an escalation that keeps its workflow task open stops the server skipping time.
            await skipping_env.sleep(HOUR + timedelta(seconds=3))
            notices = await _within(20, lambda: overdue(db, h.code))
            assert len(notices) == 1, (
                "the channel is down and Finance was never told the payment is overdue "
                "(escalate_payment asks the channel first and is retried forever)"
            )
            assert notices[0].startswith("Sở Tài chính") and f"{h.code}-A1-T1-1" in notices[0]
        finally:
            await _channel_back(client, db, bank, h.code)


async def test_an_escalation_while_the_channel_is_down_does_not_hold_up_the_officers(
    skipping_env, db, settings, tmp_path
):
    """Guarantee: the channel being unreachable holds up the payment, not the household: an officer's next step
    (the commune reporting construction complete while tranche 1 is with the channel, which the engine allows)
    is taken while an escalation cannot reach the channel."""
    client = skipping_env.client
    async with paying(client, db, settings, tmp_path / "bank", hold=True) as (bank, tq):
        h = await released(client, db, tq, await escalating_only(db))
        bank.kill()
        step = None
        try:
            await skipping_env.sleep(HOUR + timedelta(seconds=3))
            await asyncio.sleep(2)  # the escalation has started and is asking the channel
            commune = sample.commune_user(h.district, h.commune)
            step = asyncio.ensure_future(
                take_step(client, db, h.code, Step.COMPLETE_CONSTRUCTION, commune, evidence=[f"BC-HOAN-THANH/{h.code}"])
            )
            await asyncio.wait([step], timeout=20)
            assert step.done(), (
                "an officer's step waited more than 20 s behind an escalation that cannot "
                "reach the channel (_escalate holds the household's lock around an unbounded activity)"
            )
            assert step.result().to_stage is Stage.ACCEPTANCE
            state = await household_state(client, h.code)
            assert state.tranches[0].status is TrancheStatus.RELEASED and state.paid == 0
        finally:
            await _channel_back(client, db, bank, h.code)
            if step is not None and not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)


async def _channel_back(client, sessions, bank, code: str) -> None:
    """The channel up again (holding): the stuck escalation finishes (Finance told) before the worker stops, then
    the household is ended. A worker stopped while its local activity is still being retried does not stop
    cleanly."""
    bank.start(hold=True)
    await wait_until(has(1, lambda: overdue(sessions, code)), 60)
    await client.get_workflow_handle(workflow_id_for(code)).terminate("test over")
    # Each failed attempt of the local activity leaves a start-to-close timer (ACTIVITY_TIMEOUT) in the SDK's core;
    # one firing after its worker has stopped panics a thread of the runtime every worker of the session shares
    # (sdk-core local_activities.rs "receive half not dropped"), and later tests' local activities can suffer.
    await asyncio.sleep(ACTIVITY_TIMEOUT.total_seconds() + 2)


async def _within(seconds: float, read):
    """What `read` returns once it is non-empty, or after `seconds` (not raising: a failure's traceback stays
    shallow)."""
    deadline = asyncio.get_running_loop().time() + seconds
    rows = await read()
    while not rows and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)  # the notices arrive from another transaction: polled, as wait_until does
        rows = await read()
    return rows
