"""Record the histories of every path of the current release, sealed with the test key, into this folder.

    .venv/bin/python -m pytest tests/histories/capture_sealed.py

Named so that the suite does not collect it: the suite replays the files (tests/test_replay.py), it does
not rewrite them. Runs on the suite's own servers (dev server, time-skipping server for the timer paths,
a throwaway PostgreSQL).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.temporal import signaller
from db import users
from db.policy import current_workflow_policy
from db.schema import outbox
from finance.channel import SimulatedBank
from models import SetPolicyInput, Stage
from models.finance import BatchAction, BatchSelection, PayoutBatchInput, TrancheStatus
from models.household import Step
from operations import payouts, sample
from operations.actions import Refusal, take_step
from operations.demo import drive_one
from tests.conftest import enroll, make_households, running_worker, tranche_is, wait_until
from workflows.household import HouseholdWorkflow

HERE = Path(__file__).parent
# The prefix of this release's files. Earlier releases' files stay: `sealed_*` were recorded before the step
# record moved to a local activity (patch record-step-locally-2026), `local_*` after.
RELEASE = "local"


async def save(client, workflow_id: str, name: str) -> None:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"wrote {name}.json ({len(history.events)} events)")


async def test_capture_the_paths_of_the_current_release(client, sessions, settings):
    full, sent_back, cancelled, refused, returned, policy_changed, batched = make_households(
        7, beneficiary_group="poor", support_type="new_build", programme="")  # fmt: skip
    bank = SimulatedBank(delay=0.02, notify=signaller(client),
                         decide=lambda i: ("failed", "tài khoản bị khóa") if i.household_code == returned.code
                         and i.tranche == 1 and i.attempt <= 2 else ("confirmed", None))  # fmt: skip
    async with running_worker(client, sessions, settings, channel=bank) as tq:
        await enroll(client, sessions, tq, [full, sent_back, cancelled, refused, returned, policy_changed, batched])
        await drive_one(client, sessions, full)

        commune = sample.commune_user(sent_back.district, sent_back.commune)
        await take_step(client, sessions, sent_back.code, Step.VERIFY, commune, evidence=["BB-1"])
        await take_step(client, sessions, sent_back.code, Step.SEND_BACK, sample.district_user(sent_back.district),
                        reason="thiếu biên bản họp thôn")  # fmt: skip
        await drive_one(client, sessions, sent_back)

        await take_step(client, sessions, cancelled.code, Step.VERIFY,
                        sample.commune_user(cancelled.district, cancelled.commune), evidence=["BB-1"])  # fmt: skip
        await take_step(client, sessions, cancelled.code, Step.CANCEL, sample.district_user(cancelled.district),
                        reason="hộ đã được hỗ trợ từ chương trình khác")  # fmt: skip

        await take_step(client, sessions, refused.code, Step.VERIFY,
                        sample.commune_user(refused.district, refused.commune), evidence=["BB-1"])  # fmt: skip
        await take_step(client, sessions, refused.code, Step.APPROVE, sample.district_user(refused.district),
                        evidence=[refused.decision_ref])  # fmt: skip
        with pytest.raises(Refusal, match="SourceNotEligible"):
            await take_step(client, sessions, refused.code, Step.ALLOCATE, "tc.hoang", evidence=["QD"],
                            source="ADV-LOCBINH")  # fmt: skip
        await drive_one(client, sessions, refused)

        await drive_one(client, sessions, returned, payouts=False)
        # Both attempts fail: the tranche goes back to Finance (due again); re-authorised, it is paid.
        for after in (TrancheStatus.DUE, TrancheStatus.PAID):
            await take_step(client, sessions, returned.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1,
                            evidence=["D"])  # fmt: skip
            await take_step(client, sessions, returned.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1,
                            evidence=["U"])  # fmt: skip
            await wait_until(tranche_is(client, returned.code, after), seconds=30)
        await drive_one(client, sessions, returned)

        # Mid-flight policy change: the administrator gives this household longer SLAs, then it goes on.
        async with sessions() as s:
            admin = await users.require_actor(s, sample.ADMIN_USER)
            policy = await current_workflow_policy(s, date.today())
        longer = policy.model_copy(update={"sla_days": {**policy.sla_days, Stage.CONSTRUCTION: 180}})
        pc_commune = sample.commune_user(policy_changed.district, policy_changed.commune)
        await take_step(client, sessions, policy_changed.code, Step.VERIFY, pc_commune, evidence=["BB-1"])
        await client.get_workflow_handle(policy_changed.workflow_id).execute_update(
            HouseholdWorkflow.set_policy, SetPolicyInput(actor=admin, policy=longer))
        await drive_one(client, sessions, policy_changed)

        await drive_one(client, sessions, batched, payouts=False)
        async with sessions() as s:
            finance = await users.require_actor(s, "tc.hoang")
            treasury = await users.require_actor(s, sample.TREASURY_USER)
        selection = BatchSelection(codes=[batched.code])
        for action, actor in ((BatchAction.AUTHORISE, finance), (BatchAction.RELEASE, treasury)):
            await payouts.run_batch(client, tq, PayoutBatchInput(
                batch_id=payouts.batch_id_for(action, 1, selection, "sealed"), action=action, tranche=1,
                selection=selection, actor=actor, evidence=["BATCH"]))  # fmt: skip
        await wait_until(tranche_is(client, batched.code, TrancheStatus.PAID))
        release_batch = f"payout-batch-{payouts.batch_id_for(BatchAction.RELEASE, 1, selection, 'sealed')}"

        for h in (full, sent_back, refused, returned, policy_changed):
            await client.get_workflow_handle(h.workflow_id).result()
        await save(client, full.workflow_id, f"{RELEASE}_full_path_new_build")
        await save(client, sent_back.workflow_id, f"{RELEASE}_send_back_then_full_path")
        await save(client, cancelled.workflow_id, f"{RELEASE}_cancel_before_allocation")
        await save(client, refused.workflow_id, f"{RELEASE}_allocation_refused_then_allocated")
        await save(client, returned.workflow_id, f"{RELEASE}_payment_returned_to_finance")
        await save(client, policy_changed.workflow_id, f"{RELEASE}_policy_changed_mid_flight")
        await save(client, release_batch, f"{RELEASE}_batch_release")
        await client.get_workflow_handle(batched.workflow_id).terminate("history captured")


async def test_capture_the_timer_paths(skipping_env, sessions, settings):
    """An SLA reminder, then a released payment the channel never answers: escalated after 72 hours."""
    client = skipping_env.client
    bank = SimulatedBank(delay=0.01, notify=signaller(client), decide=lambda i: ("pending", None))
    async with running_worker(client, sessions, settings, channel=bank) as tq:
        (h,) = await enroll(client, sessions, tq, make_households(1, beneficiary_group="poor"))
        await skipping_env.sleep(timedelta(days=31))

        async def kinds():
            async with sessions() as s:
                return {k for (k,) in await s.execute(select(outbox.c.kind).where(outbox.c.household_code == h.code))}

        await wait_until(lambda: _has(kinds, "sla_reminder"))
        await drive_one(client, sessions, h, payouts=False)
        await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
        await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1,
                        evidence=["U"])  # fmt: skip
        await skipping_env.sleep(timedelta(hours=73))
        await wait_until(lambda: _has(kinds, "payment_overdue"))
        await client.get_workflow_handle(h.workflow_id).terminate("history captured")
        await save(client, h.workflow_id, f"{RELEASE}_sla_reminder_and_payment_escalation")


async def _has(kinds, kind: str) -> bool:
    return kind in await kinds()

