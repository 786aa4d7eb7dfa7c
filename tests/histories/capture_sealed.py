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

from core.errors import Refusal
from db import users
from db.policy import current_workflow_policy
from db.schema import outbox
from models import Stage
from models.finance import BatchAction, BatchSelection, PayoutBatchInput, TrancheStatus
from models.household import Step
from operations import payouts, policies, registry, sample
from tests.conftest import (
    BankProcess,
    drive_one,
    enroll,
    front_door,
    make_households,
    running_worker,
    take_step,
    tranche_is,
    wait_until,
)

HERE = Path(__file__).parent
# The prefix of this release's files. Earlier releases' files stay: `sealed_*` were recorded before the step
# record moved to a local activity (patch record-step-locally-2026), `local_*` after it and before the
# scheduled status inquiries (patch payment-inquiry-2026), `inquiry_*` after both and before signed actions
# (patch signed-actions-2026), `signed_*` after it: every step, policy change and batch signed by the suite's
# front door (on the time-skipping server by the server's clock: tests.conftest.front_door). The engine now
# refuses what is unsigned, so this script records only the current release.
RELEASE = "signed"


async def save(client, workflow_id: str, name: str) -> None:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"wrote {name}.json ({len(history.events)} events)")


async def test_capture_the_paths_of_the_current_release(client, sessions, owner_sessions, settings, tmp_path, request):
    full, sent_back, cancelled, refused, returned, policy_changed, batched = make_households(
        7, beneficiary_group="poor", support_type="new_build", programme=""
    )
    # The bank process refuses `returned`'s tranche 1 twice (then it is returned to Finance) and pays the rest.
    bank = BankProcess(
        tmp_path / "bank", delay=0.02, fail_match=(rf"^{returned.code}-A\d+-T1-",), fail_attempts=2
    ).start()
    request.addfinalizer(bank.stop)
    async with running_worker(client, sessions, settings, bank=bank) as tq:
        await enroll(client, sessions, tq, [full, sent_back, cancelled, refused, returned, policy_changed, batched])
        await drive_one(client, sessions, full)

        commune = sample.commune_user(sent_back.district, sent_back.commune)
        await take_step(client, sessions, sent_back.code, Step.VERIFY, commune, evidence=["BB-1"])
        await take_step(
            client,
            sessions,
            sent_back.code,
            Step.SEND_BACK,
            sample.district_user(sent_back.district),
            reason="thiếu biên bản họp thôn",
        )
        await drive_one(client, sessions, sent_back)

        await take_step(
            client,
            sessions,
            cancelled.code,
            Step.VERIFY,
            sample.commune_user(cancelled.district, cancelled.commune),
            evidence=["BB-1"],
        )
        await take_step(
            client,
            sessions,
            cancelled.code,
            Step.CANCEL,
            sample.district_user(cancelled.district),
            reason="hộ đã được hỗ trợ từ chương trình khác",
        )

        await take_step(
            client,
            sessions,
            refused.code,
            Step.VERIFY,
            sample.commune_user(refused.district, refused.commune),
            evidence=["BB-1"],
        )
        await take_step(
            client,
            sessions,
            refused.code,
            Step.APPROVE,
            sample.district_user(refused.district),
            evidence=[refused.decision_ref],
        )
        with pytest.raises(Refusal, match="SourceNotEligible"):
            await take_step(
                client, sessions, refused.code, Step.ALLOCATE, "tc.hoang", evidence=["QD"], source="ADV-LOCBINH"
            )
        await drive_one(client, sessions, refused)

        await drive_one(client, sessions, returned, payouts=False)
        # Both attempts fail: the tranche goes back to Finance (due again); re-authorised, it is paid.
        for after in (TrancheStatus.DUE, TrancheStatus.PAID):
            await take_step(
                client, sessions, returned.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"]
            )
            await take_step(
                client, sessions, returned.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U"]
            )
            await wait_until(tranche_is(client, returned.code, after), seconds=30)
        await drive_one(client, sessions, returned)

        # Mid-flight policy change: the administrator gives this household longer SLAs, then it goes on. The
        # version is stored first (the recording activity re-reads it), effective only later so that no other
        # household enrolled by this script starts on it; the change is signed for this household only.
        async with sessions() as s:
            policy = await current_workflow_policy(s, date.today())
        longer = policy.model_copy(
            update={
                "version": f"{policy.version}-{RELEASE}-longer-construction",
                "sla_days": {**policy.sla_days, Stage.CONSTRUCTION: 180},
            }
        )
        await policies.add_version(owner_sessions, longer, date.today() + timedelta(days=3650), sample.ADMIN_USER)
        pc_commune = sample.commune_user(policy_changed.district, policy_changed.commune)
        await take_step(client, sessions, policy_changed.code, Step.VERIFY, pc_commune, evidence=["BB-1"])
        pushed = await policies.push(
            client,
            sessions,
            longer,
            sample.ADMIN_USER,
            signer=await front_door(client),
            query=f"WorkflowId = '{policy_changed.workflow_id}'",
        )
        assert (pushed.applied, pushed.refused) == (1, 0)
        await drive_one(client, sessions, policy_changed)

        await drive_one(client, sessions, batched, payouts=False)
        async with sessions() as s:
            finance = await users.require_actor(s, "tc.hoang")
            treasury = await users.require_actor(s, sample.TREASURY_USER)
        selection = BatchSelection(codes=[batched.code])
        for action, actor in ((BatchAction.AUTHORISE, finance), (BatchAction.RELEASE, treasury)):
            await payouts.run_batch(
                client,
                tq,
                payouts.sign_batch(
                    await front_door(client),
                    PayoutBatchInput(
                        batch_id=payouts.batch_id_for(action, 1, selection, RELEASE),
                        action=action,
                        tranche=1,
                        selection=selection,
                        actor=actor,
                        evidence=["BATCH"],
                    ),
                ),
            )
        await wait_until(tranche_is(client, batched.code, TrancheStatus.PAID))
        release_batch = f"payout-batch-{payouts.batch_id_for(BatchAction.RELEASE, 1, selection, RELEASE)}"

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


async def test_capture_the_timer_paths(skipping_env, sessions, settings, tmp_path, request):
    """An SLA reminder, then a released payment the channel never answers: escalated after 72 hours."""
    client = skipping_env.client
    bank = BankProcess(tmp_path / "bank", hold=True).start()  # accepts, never answers
    request.addfinalizer(bank.stop)
    async with running_worker(client, sessions, settings, bank=bank) as tq:
        (h,) = await enroll(client, sessions, tq, make_households(1, beneficiary_group="poor"))
        await skipping_env.sleep(timedelta(days=31))

        async def kinds():
            async with sessions() as s:
                return {k for (k,) in await s.execute(select(outbox.c.kind).where(outbox.c.household_code == h.code))}

        await wait_until(lambda: _has(kinds, "sla_reminder"))
        await drive_one(client, sessions, h, payouts=False)
        await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
        await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U"])
        await skipping_env.sleep(timedelta(hours=73))
        await wait_until(lambda: _has(kinds, "payment_overdue"))
        await client.get_workflow_handle(h.workflow_id).terminate("history captured")
        await save(client, h.workflow_id, f"{RELEASE}_sla_reminder_and_payment_escalation")


async def _has(kinds, kind: str) -> bool:
    return kind in await kinds()


async def test_capture_the_inquiry_paths(skipping_env, sessions, settings, tmp_path, request):
    """A callback that never arrives (found by the first inquiry), and an instruction the bank lost (sent
    again under the same id by the inquiry)."""
    import shutil

    from finance.channel import HttpBank
    from runtime.stack import free_port

    client = skipping_env.client
    bank = BankProcess(tmp_path / "bank").start()
    request.addfinalizer(bank.stop)
    lost_callback, lost_instruction = make_households(2, beneficiary_group="poor")
    async with HttpBank(bank.url, secret=bank.secret, callback_url=f"http://127.0.0.1:{free_port()}/x") as channel:
        async with running_worker(client, sessions, settings, channel=channel) as tq:
            await enroll(client, sessions, tq, [lost_callback, lost_instruction])
            for h in (lost_callback, lost_instruction):
                await drive_one(client, sessions, h, payouts=False)
                await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
            await take_step(
                client,
                sessions,
                lost_callback.code,
                Step.RELEASE_PAYOUT,
                sample.TREASURY_USER,
                tranche=1,
                evidence=["U"],
            )
            await wait_until(lambda: _confirmed_at(bank, lost_callback.code))
            bank.kill()
            backup = tmp_path / "bank-backup"
            shutil.copytree(bank.state, backup)
            bank.start(hold=True)
            await take_step(
                client,
                sessions,
                lost_instruction.code,
                Step.RELEASE_PAYOUT,
                sample.TREASURY_USER,
                tranche=1,
                evidence=["U"],
            )
            bank.kill()
            shutil.rmtree(bank.state)
            shutil.copytree(backup, bank.state)  # the bank restored from a backup older than that instruction
            bank.start(hold=False)
            # The first inquiry (2 min) finds the payment and the lost instruction (sent again); the second
            # (7 min) finds that one paid too, since its callback cannot arrive either. The bank is let pay the
            # instruction sent again before the clock skips to the second inquiry, which would otherwise find
            # it still pending (the server skips at once; the bank takes its delay in wall-clock time).
            await skipping_env.sleep(timedelta(minutes=3))
            await wait_until(tranche_is(client, lost_callback.code, TrancheStatus.PAID), seconds=30)
            await wait_until(lambda: _confirmed_at(bank, lost_instruction.code), seconds=30)
            await skipping_env.sleep(timedelta(minutes=5))
            await wait_until(tranche_is(client, lost_instruction.code, TrancheStatus.PAID), seconds=30)
            for h in (lost_callback, lost_instruction):
                await client.get_workflow_handle(h.workflow_id).terminate("history captured")
            await save(client, lost_callback.workflow_id, f"{RELEASE}_lost_callback_found_by_inquiry")
            await save(client, lost_instruction.workflow_id, f"{RELEASE}_lost_instruction_sent_again")


async def _confirmed_at(bank, code: str) -> bool:
    return [p["state"] for p in await bank.statement(code)] == ["confirmed"]


async def test_capture_the_review_paths(client, sessions, owner_sessions, settings, tmp_path, request):
    """Before the money (policy 2026.2): a posting with an objection dismissed, a match with another
    programme's list overridden, then a repair changed to a new build after its first tranche was paid; and an
    objection upheld, sending the household back to be reviewed again. Recorded as `review_*`."""
    from tests.test_review import PROGRAMME, _paid, _posted, _raised, _step, _until, _verified

    changed, sent_back = make_households(2, beneficiary_group="poor", support_type="repair", programme="")
    bank = BankProcess(tmp_path / "bank", delay=0.02).start()
    request.addfinalizer(bank.stop)
    key = b"review-capture-match-key-32-bytes!"
    async with running_worker(client, sessions, settings, bank=bank) as tq:
        await enroll(client, sessions, tq, [changed, sent_back])
        async with sessions() as s, s.begin():
            await registry.key_households(s, key, [(changed.code, changed.cccd)])
        other = f"cccd,year\n{changed.cccd},2019\n".encode()
        await registry.import_list(
            owner_sessions, other, "ct135.csv", programme=PROGRAMME, user_id=sample.FINANCE_USERS[0], key=key
        )
        for h in (changed, sent_back):
            commune, district = sample.officers_of(h.district, h.commune)
            await _verified(client, sessions, h)
            posted = await _posted(client, sessions, h)
            raised = await _raised(client, sessions, h, posted)
            outcome = "dismissed" if h is changed else "upheld_send_back"
            await _step(
                client,
                sessions,
                h,
                Step.RESOLVE_OBJECTION,
                district,
                reason="Xác minh",
                objection=raised.objection,
                outcome=outcome,
            )
        await _step(
            client,
            sessions,
            changed,
            Step.OVERRIDE_DOUBLE_SUPPORT,
            sample.PROVINCE_USER,
            ["CV"],
            "Nước sạch",
            programme=PROGRAMME,
        )
        await _until(client, sessions, changed, _paid)
        commune, district = sample.officers_of(changed.district, changed.commune)
        asked = await _step(
            client,
            sessions,
            changed,
            Step.REQUEST_CHANGE,
            commune,
            ["BB"],
            "Khung hư hỏng",
            kind="support_type",
            support_type="new_build",
        )
        await _step(client, sessions, changed, Step.DECIDE_CHANGE, district, ["QĐ"], change=asked.change)
        await drive_one(client, sessions, changed)
        await client.get_workflow_handle(changed.workflow_id).result()
        await save(client, changed.workflow_id, "review_objection_override_then_support_type_changed")
        await _verified(client, sessions, sent_back)
        await client.get_workflow_handle(sent_back.workflow_id).terminate("history captured")
        await save(client, sent_back.workflow_id, "review_objection_upheld_then_reviewed_again")
