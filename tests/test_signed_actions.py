"""No officer can be impersonated, even by someone who reaches Temporal: every step and policy change must carry
an assertion an officers' front door signed for exactly that household, step, input and user, once, while it
is valid. The update's validator refuses anything else (`Unauthenticated`, and the history gains no event);
the recording activity verifies again, so a workflow of someone else's scheduling `record_transition` records
nothing, and it refuses a workflow's copy of the household that is not the registered one. Segregation of
duties the signatures make real: who reported a tranche's milestone does not release it, and whoever imported a
list does not approve its households. Against the real dev server and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from activities.household import HouseholdActivities
from auditor.records import read_records
from auditor.verify import verify
from core import signing
from core.errors import Refusal
from core.signing import sign_input
from db import signing_keys, users
from db.policy import current_workflow_policy
from db.schema import audit_log
from models import ApproveInput, SetPolicyInput, Stage, Step, TransitionRecord, VerifyInput
from models.assertion import signed_input
from models.finance import Milestone, ReleasePayoutInput, TrancheStatus
from models.household import SupportType
from operations import sample
from operations.actions import household_state, next_actions
from operations.csv_list import to_csv
from operations.imports import register, start_workflows
from operations.policies import add_version
from operations.signing_keys import public_keys
from tests.conftest import FINDINGS, FRONT_DOOR, SEALED, enroll, make_households, post_list, take_step, wait_until
from tests.test_audit import trails_of
from workflows.household import HouseholdWorkflow
from workflows.runner import workflow_runner

DISTRICT_NAME, COMMUNE_NAME = "Văn Quan", "Khánh Khê"
COMMUNE = sample.commune_user(DISTRICT_NAME, COMMUNE_NAME)
DISTRICT = sample.district_user(DISTRICT_NAME)
ROGUE = signing.new_ring("rogue-door")  # a front door nobody registered
WORKFLOW_TASK_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
}


async def _actor(sessions, user_id: str):
    async with sessions() as s:
        return await users.require_actor(s, user_id)


def _sign(inp, workflow_id: str, step: Step | str, *, ring=FRONT_DOOR, now: datetime | None = None):
    step = step.value if isinstance(step, Step) else step
    return sign_input(ring, inp, workflow_id=workflow_id, step=step, user_id=inp.actor.user_id, now=now)


async def _events(handle) -> int:
    """The history's length once its last workflow task has completed (a new workflow's first task may still
    be running when a test starts)."""

    async def settled():
        events = (await handle.fetch_history()).events
        tasks = [e.event_type for e in events if e.event_type in WORKFLOW_TASK_EVENTS]
        return len(events) if tasks and tasks[-1] == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED else None

    return await wait_until(settled)


async def _replays(client, workflow_id: str) -> None:
    """The live history replays against the code (handlers run on replay; validators do not)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    replayer = Replayer(workflows=[HouseholdWorkflow], data_converter=SEALED, workflow_runner=workflow_runner(SEALED))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def _audit_rows(sessions, code: str) -> int:
    async with sessions() as s:
        return await s.scalar(select(func.count()).where(audit_log.c.household_code == code))


async def _refused(client, sessions, code: str, update, inp) -> ApplicationError:
    """Send the update as it is; it must be refused with no event in the history and nothing written."""
    handle = client.get_workflow_handle(f"household-{code}")
    events, rows = await _events(handle), await _audit_rows(sessions, code)
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(update, inp)
    assert await _events(handle) == events, "a refused update leaves no event in the history"
    assert await _audit_rows(sessions, code) == rows, "a refused update writes nothing"
    assert isinstance(caught.value.cause, ApplicationError)
    return caught.value.cause


@pytest.fixture
async def household(client, sessions, task_queue):
    (h,) = await enroll(
        client,
        sessions,
        task_queue,
        make_households(1, district=DISTRICT_NAME, commune=COMMUNE_NAME, support_type="new_build"),
    )
    return h


@pytest.fixture
async def yesterdays_door(owner_sessions, sessions, settings):
    """A front door whose key PostgreSQL has held since yesterday, so an assertion issued an hour ago is judged
    by its age, not by its key's validity. The workers' trusted keys are reloaded (what worker.py does)."""
    ring = signing.new_ring(f"door-{uuid.uuid4().hex[:8]}")
    (key,) = public_keys(ring, "officers", datetime.now(UTC) - timedelta(days=1))
    async with owner_sessions() as s, s.begin():
        await signing_keys.register(s, key)
    async with sessions() as s:
        signing.trust(await signing_keys.load(s))
    return ring


# ------------------------------------------------------------------ the validator


async def test_an_unsigned_step_is_refused_and_leaves_no_event(client, sessions, household):
    inp = VerifyInput(actor=await _actor(sessions, COMMUNE), evidence=["BB"], findings=FINDINGS)
    err = await _refused(client, sessions, household.code, HouseholdWorkflow.verify, inp)
    assert err.type == "Unauthenticated" and "carries no signed assertion" in err.message
    assert (await household_state(client, household.code)).stage is Stage.VERIFICATION


async def test_a_forged_signature_and_an_unknown_key_are_refused(client, sessions, household):
    inp = VerifyInput(actor=await _actor(sessions, COMMUNE), evidence=["BB"], findings=FINDINGS)
    err = await _refused(
        client,
        sessions,
        household.code,
        HouseholdWorkflow.verify,
        _sign(inp, household.workflow_id, Step.VERIFY, ring=ROGUE),
    )
    assert err.type == "Unauthenticated" and "does not know" in err.message
    # The real key's id, another private key: the signature does not verify.
    forger = signing.SigningRing(active=FRONT_DOOR.active, keys={FRONT_DOOR.active: ROGUE.keys[ROGUE.active]})
    err = await _refused(
        client,
        sessions,
        household.code,
        HouseholdWorkflow.verify,
        _sign(inp, household.workflow_id, Step.VERIFY, ring=forger),
    )
    assert err.type == "Unauthenticated" and "signature does not verify" in err.message


async def test_an_expired_assertion_is_refused(client, sessions, household, yesterdays_door):
    inp = VerifyInput(actor=await _actor(sessions, COMMUNE), evidence=["BB"], findings=FINDINGS)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    err = await _refused(
        client,
        sessions,
        household.code,
        HouseholdWorkflow.verify,
        _sign(inp, household.workflow_id, Step.VERIFY, ring=yesterdays_door, now=an_hour_ago),
    )
    assert err.type == "Unauthenticated" and "expired" in err.message
    # The same door, now: accepted.
    result = await client.get_workflow_handle(household.workflow_id).execute_update(
        HouseholdWorkflow.verify, _sign(inp, household.workflow_id, Step.VERIFY, ring=yesterdays_door)
    )
    assert result.to_stage is Stage.APPROVAL


async def test_an_assertion_for_another_step_or_with_its_input_changed_is_refused(client, sessions, household):
    await take_step(client, sessions, household.code, Step.VERIFY, COMMUNE, evidence=["BB"])
    await post_list(client, sessions, household.code)
    approve = ApproveInput(actor=await _actor(sessions, DISTRICT), evidence=["QĐ-1"])
    err = await _refused(
        client, sessions, household.code, HouseholdWorkflow.approve, _sign(approve, household.workflow_id, Step.VERIFY)
    )
    assert err.type == "Unauthenticated" and "for step 'verify', not 'approve'" in err.message
    signed = _sign(approve, household.workflow_id, Step.APPROVE)
    tampered = signed.model_copy(update={"evidence": ["QĐ-GIẢ"]})
    err = await _refused(client, sessions, household.code, HouseholdWorkflow.approve, tampered)
    assert err.type == "Unauthenticated" and "not the input the assertion was signed for" in err.message
    # Signed for this officer, sent as another.
    other = signed.model_copy(update={"actor": await _actor(sessions, sample.PROVINCE_USER)})
    err = await _refused(client, sessions, household.code, HouseholdWorkflow.approve, other)
    assert err.type == "Unauthenticated"
    assert (
        await client.get_workflow_handle(household.workflow_id).execute_update(HouseholdWorkflow.approve, signed)
    ).to_stage is Stage.FUND_ALLOCATION


async def test_a_replayed_assertion_is_refused_here_and_on_another_household(client, sessions, task_queue):
    first, second = await enroll(
        client, sessions, task_queue, make_households(2, district=DISTRICT_NAME, commune=COMMUNE_NAME)
    )
    inp = _sign(
        VerifyInput(actor=await _actor(sessions, COMMUNE), evidence=["BB"], findings=FINDINGS),
        first.workflow_id,
        Step.VERIFY,
    )
    handle = client.get_workflow_handle(first.workflow_id)
    await handle.execute_update(HouseholdWorkflow.verify, inp)
    err = await _refused(client, sessions, first.code, HouseholdWorkflow.verify, inp)  # the same, sent again
    assert err.type == "Unauthenticated" and "used before" in err.message
    err = await _refused(client, sessions, second.code, HouseholdWorkflow.verify, inp)
    assert err.type == "Unauthenticated" and f"is for {first.workflow_id}, not {second.workflow_id}" in err.message
    assert (await household_state(client, second.code)).stage is Stage.VERIFICATION


async def test_one_assertion_sent_twice_at_once_takes_one_step(client, sessions, household):
    inp = _sign(
        VerifyInput(actor=await _actor(sessions, COMMUNE), evidence=["BB"], findings=FINDINGS),
        household.workflow_id,
        Step.VERIFY,
    )
    handle = client.get_workflow_handle(household.workflow_id)
    results = await asyncio.gather(
        *(handle.execute_update(HouseholdWorkflow.verify, inp) for _ in range(2)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, WorkflowUpdateFailedError)]
    # Refused by the validator if the first was recorded by then, else by the handler's check under the lock.
    assert len(refused) == 1 and refused[0].cause.type == "Unauthenticated"
    assert "used before" in refused[0].cause.message
    assert await _audit_rows(sessions, household.code) == 1
    assert len((await household_state(client, household.code)).timeline) == 1


# ------------------------------------------------------------------ the recording activity


async def _schedule_record(args: list) -> str:
    record, task_queue = args
    try:
        await workflow.execute_activity(
            "record_transition",
            record,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=20),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
    except ActivityError as err:
        return f"{getattr(err.cause, 'type', None)}: {getattr(err.cause, 'message', err.cause)}"
    return "recorded"


@workflow.defn(name="ForeignRecorder", sandboxed=False)
class ForeignRecorder:
    """Someone else's workflow, scheduling the engine's recording activity on the engine's task queue."""

    @workflow.run
    async def run(self, args: list) -> str:
        return await _schedule_record(args)


@workflow.defn(name="HouseholdWorkflow", sandboxed=False)
class Impostor:
    """The same, registered under the engine's workflow type name (on a worker of its own)."""

    @workflow.run
    async def run(self, args: list) -> str:
        return await _schedule_record(args)


async def _foreign(client, task_queue: str, record: TransitionRecord, cls=ForeignRecorder, workflow_id=None) -> str:
    """Run `cls` on a queue of its own against the engine's `task_queue`; returns what its activity answered."""
    own = f"foreign-{uuid.uuid4()}"
    async with Worker(client, task_queue=own, workflows=[cls], workflow_runner=UnsandboxedWorkflowRunner()):
        return await client.execute_workflow(
            cls.run,
            [record.model_dump(mode="json"), task_queue],
            id=workflow_id or f"foreign-{uuid.uuid4()}",
            task_queue=own,
        )


async def _verify_record(sessions, h, *, evidence=("BB",), **changes) -> TransitionRecord:
    """The record the household's workflow would hand the activity for its first step, properly signed."""
    inp = _sign(
        VerifyInput(actor=await _actor(sessions, COMMUNE), evidence=list(evidence), findings=FINDINGS),
        h.workflow_id,
        Step.VERIFY,
    )
    rec = TransitionRecord(
        idempotency_key=f"{h.workflow_id}#1",
        workflow_id=h.workflow_id,
        household_code=h.code,
        seq=1,
        step=Step.VERIFY,
        from_stage=Stage.VERIFICATION,
        to_stage=Stage.APPROVAL,
        at=datetime.now(UTC),
        actor=inp.actor,
        evidence=list(evidence),
        support_type=h.support_type,
        beneficiary_group=h.beneficiary_group,
        assertion=inp.assertion,
        signed_input=signed_input(inp),
    )
    return rec.model_copy(update=changes)


async def test_a_foreign_workflow_scheduling_record_transition_records_nothing(client, sessions, household, task_queue):
    rec = await _verify_record(sessions, household)
    refusal = await _foreign(client, task_queue, rec)
    assert refusal.startswith("Unauthenticated") and "ForeignRecorder" in refusal
    # Named as the engine's workflow type does not help: its id is not the household's.
    impostor = f"{household.workflow_id}-x"
    refusal = await _foreign(client, task_queue, rec, Impostor, workflow_id=impostor)
    assert refusal.startswith("Unauthenticated") and impostor in refusal
    assert await _audit_rows(sessions, household.code) == 0
    # The household's own workflow takes the step as usual.
    await take_step(client, sessions, household.code, Step.VERIFY, COMMUNE, evidence=["BB"])
    assert await _audit_rows(sessions, household.code) == 1


async def test_the_activity_refuses_a_record_that_is_not_what_was_signed(sessions):
    (household,) = make_households(1, district=DISTRICT_NAME, commune=COMMUNE_NAME)
    await register(sessions, to_csv([household]), "activity.csv", sample.PROVINCE_USER)  # no workflow: the activity
    acts = HouseholdActivities(sessions)
    unsigned = await _verify_record(sessions, household, assertion=None, signed_input=None)
    changed = await _verify_record(sessions, household)
    changed = changed.model_copy(update={"evidence": ["BB-KHÁC"]})
    rogue = await _verify_record(sessions, household)
    rogue_inp = _sign(
        VerifyInput(actor=rogue.actor, evidence=["BB"], findings=FINDINGS),
        household.workflow_id,
        Step.VERIFY,
        ring=ROGUE,
    )
    rogue = rogue.model_copy(update={"assertion": rogue_inp.assertion})
    for rec, says in ((unsigned, "carries no signed assertion"), (changed, "evidence"), (rogue, "does not know")):
        with pytest.raises(ApplicationError) as caught:
            await acts.record_transition(rec)
        assert caught.value.type == "Unauthenticated" and says in caught.value.message
    assert await _audit_rows(sessions, household.code) == 0
    # Signed as recorded: written, with its assertion; the same assertion again (at the next seq) is refused by
    # PostgreSQL's unique index, whatever the record says.
    good = await _verify_record(sessions, household)
    await acts.record_transition(good)
    again = good.model_copy(
        update={
            "seq": 2,
            "idempotency_key": f"{household.workflow_id}#2",
            "from_stage": Stage.APPROVAL,
            "to_stage": Stage.FUND_ALLOCATION,
        }
    )
    with pytest.raises(ApplicationError) as caught:
        await acts.record_transition(again)
    assert caught.value.type == "Unauthenticated" and "used before" in caught.value.message
    async with sessions() as s:
        row = (
            await s.execute(
                select(audit_log.c.assertion, audit_log.c.signed_input).where(
                    audit_log.c.household_code == household.code
                )
            )
        ).one()
    assert row.assertion["nonce"] == good.assertion.nonce and row.signed_input == good.signed_input


async def test_a_workflow_copy_that_is_not_the_registered_household_is_refused(client, sessions, task_queue):
    (h,) = make_households(1, district=DISTRICT_NAME, commune=COMMUNE_NAME, support_type="repair")
    report, (registered,), current = await register(sessions, to_csv([h]), "copy.csv", sample.PROVINCE_USER)
    # The workflow is started with a copy that says new build (more money) instead of the registered repair.
    changed = registered.model_copy(update={"support_type": SupportType.NEW_BUILD})
    await start_workflows(client, task_queue, [changed], current, importers=report.importers)
    with pytest.raises(Refusal) as caught:
        await take_step(client, sessions, h.code, Step.VERIFY, COMMUNE, evidence=["BB"])
    assert caught.value.rule == "HouseholdMismatch" and "support_type 'new_build'" in caught.value.message
    assert await _audit_rows(sessions, h.code) == 0


# ------------------------------------------------------------------ policy changes


async def test_a_policy_change_must_be_signed_by_a_policy_admin_for_a_stored_version(
    client, sessions, owner_sessions, household
):
    wid = household.workflow_id
    async with sessions() as s:
        current = await current_workflow_policy(s, date.today())
    steps = dict(current.steps)
    steps[Step.VERIFY] = steps[Step.VERIFY].model_copy(update={"roles": ["district_officer"]})
    stored = current.model_copy(update={"version": f"signed-{household.code}", "steps": steps})
    await add_version(owner_sessions, stored, date(2097, 5, 1), sample.ADMIN_USER)  # future: not in force
    admin = await _actor(sessions, sample.ADMIN_USER)
    district = await _actor(sessions, DISTRICT)

    def change(actor, policy):
        return SetPolicyInput(actor=actor, policy=policy)

    err = await _refused(client, sessions, household.code, HouseholdWorkflow.set_policy, change(admin, stored))
    assert err.type == "Unauthenticated"
    err = await _refused(
        client,
        sessions,
        household.code,
        HouseholdWorkflow.set_policy,
        _sign(change(district, stored), wid, Step.SET_POLICY),
    )
    assert err.type == "RoleNotAllowed"
    # A district officer claiming the admin role: the users table says otherwise.
    claimed = district.model_copy(update={"role": "admin"})
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await client.get_workflow_handle(wid).execute_update(
            HouseholdWorkflow.set_policy, _sign(change(claimed, stored), wid, Step.SET_POLICY)
        )
    assert caught.value.cause.type == "ActorMismatch"
    # Signed by the admin, but a version the table does not hold, or holds otherwise.
    invented = stored.model_copy(update={"version": f"invented-{household.code}"})
    edited = stored.model_copy(update={"policy_admin_roles": ["admin", "district_officer"]})
    for policy, rule in ((invented, "UnknownPolicy"), (edited, "PolicyMismatch")):
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await client.get_workflow_handle(wid).execute_update(
                HouseholdWorkflow.set_policy, _sign(change(admin, policy), wid, Step.SET_POLICY)
            )
        assert caught.value.cause.type == rule
    state = await household_state(client, household.code)
    assert state.policy_version == current.version and state.timeline == []
    assert await _audit_rows(sessions, household.code) == 0

    result = await client.get_workflow_handle(wid).execute_update(
        HouseholdWorkflow.set_policy, _sign(change(admin, stored), wid, Step.SET_POLICY)
    )
    assert (result.previous_version, result.version) == (current.version, stored.version)
    state = await household_state(client, household.code)
    (entry,) = state.timeline
    assert (entry.step, entry.user_id, entry.evidence, entry.from_stage, entry.to_stage) == (
        Step.SET_POLICY,
        sample.ADMIN_USER,
        [stored.version],
        Stage.VERIFICATION,
        Stage.VERIFICATION,
    )
    # The change is in the audit chain, and the auditors' verify finds the three records agree.
    assert await _audit_rows(sessions, household.code) == 1
    report = verify(await trails_of(client, [household.code]), await read_records(sessions, [household.code]))
    assert report.discrepancies == [] and report.transitions == 1
    with pytest.raises(Refusal) as refused:  # the new policy is the one in force
        await take_step(client, sessions, household.code, Step.VERIFY, COMMUNE, evidence=["BB"])
    assert refused.value.rule == "RoleNotAllowed" and stored.version in refused.value.message
    await take_step(client, sessions, household.code, Step.VERIFY, DISTRICT, evidence=["BB"])
    await _replays(client, wid)


# ------------------------------------------------------------------ segregation of duties


async def test_the_importer_of_a_list_may_not_approve_its_households(client, sessions, household):
    await take_step(client, sessions, household.code, Step.VERIFY, COMMUNE, evidence=["BB"])
    await post_list(client, sessions, household.code)
    province = await _actor(sessions, sample.PROVINCE_USER)  # imported the list (tests/conftest.py enroll)
    state = await household_state(client, household.code)
    assert state.imported_by == sample.PROVINCE_USER
    assert Step.APPROVE not in [o.step for o in await next_actions(sessions, state, province)]
    with pytest.raises(Refusal) as caught:
        await take_step(client, sessions, household.code, Step.APPROVE, sample.PROVINCE_USER, evidence=["QĐ"])
    assert caught.value.rule == "SegregationOfDuties" and "imported the list" in caught.value.message
    district = await _actor(sessions, DISTRICT)
    assert Step.APPROVE in [o.step for o in await next_actions(sessions, state, district)]
    assert (
        await take_step(client, sessions, household.code, Step.APPROVE, DISTRICT, evidence=["QĐ"])
    ).to_stage is Stage.FUND_ALLOCATION


async def test_who_reported_a_tranches_milestone_may_not_release_it(client, sessions, household):
    for step, user, extra in (
        (Step.VERIFY, COMMUNE, {}),
        (Step.APPROVE, DISTRICT, {}),
        (Step.ALLOCATE, "tc.hoang", {}),
        (Step.REPORT_PROGRESS, COMMUNE, {"milestone": Milestone.FOUNDATION.value}),
        (Step.AUTHORISE_PAYOUT, "tc.hoang", {"tranche": 1}),
    ):
        await take_step(client, sessions, household.code, step, user, evidence=["doc"], **extra)
    state = await household_state(client, household.code)
    assert state.tranches[0].status is TrancheStatus.AUTHORISED
    commune = await _actor(sessions, COMMUNE)  # a commune officer may release (policy), but not this tranche
    assert Step.RELEASE_PAYOUT not in [o.step for o in await next_actions(sessions, state, commune)]
    release = _sign(
        ReleasePayoutInput(actor=commune, tranche=1, evidence=["UNC"]), household.workflow_id, Step.RELEASE_PAYOUT
    )
    err = await _refused(client, sessions, household.code, HouseholdWorkflow.release_payout, release)
    assert err.type == "SegregationOfDuties" and "tranche 1" in err.message
    treasury = await _actor(sessions, sample.TREASURY_USER)
    assert Step.RELEASE_PAYOUT in [o.step for o in await next_actions(sessions, state, treasury)]
    await take_step(
        client, sessions, household.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, evidence=["UNC"], tranche=1
    )
    await _replays(client, household.workflow_id)
