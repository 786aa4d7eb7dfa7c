"""Every refusal the engine makes, asserted by the rule it names, and that a refusal changes nothing."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from sqlalchemy import func, select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from auditor.history import read_trail
from core.errors import Refusal
from core.signing import sign_input
from db import users
from db.policy import current_workflow_policy
from db.schema import audit_log, ledger_transfers
from models import Actor, ApproveInput, Jurisdiction, SetPolicyInput, Stage, Step, VerifyInput
from models.household import workflow_id_for
from operations import sample
from operations.actions import household_state
from operations.csv_list import to_csv
from operations.imports import register, start_workflows
from operations.policies import add_version
from tests.conftest import FINDINGS, FRONT_DOOR, SEALED, drive_one, enroll, make_households, post_list, take_step
from tests.test_finance import own_programme
from workflows.household import HouseholdWorkflow


async def _audit_rows(sessions, code: str) -> int:
    async with sessions() as s:
        return await s.scalar(select(func.count()).where(audit_log.c.household_code == code))


async def _refused(client, sessions, code, step, user, **kw) -> Refusal:
    before = await household_state(client, code)
    rows_before = await _audit_rows(sessions, code)
    with pytest.raises(Refusal) as caught:
        await take_step(client, sessions, code, step, user, **kw)
    after = await household_state(client, code)
    assert after == before, "a refused step must not change the household"
    assert await _audit_rows(sessions, code) == rows_before, "a refused step must write nothing"
    return caught.value


@pytest.fixture
async def household(client, sessions, task_queue):
    items = make_households(1, district="Cao Lộc", commune="Hải Yến", support_type="new_build")
    (h,) = await enroll(client, sessions, task_queue, items)
    return h


COMMUNE = sample.commune_user("Cao Lộc", "Hải Yến")
DISTRICT = sample.district_user("Cao Lộc")


async def test_step_out_of_order_is_refused(client, sessions, household):
    r = await _refused(client, sessions, household.code, Step.APPROVE, DISTRICT, evidence=["QĐ"])
    assert r.rule == "OutOfOrder"
    assert "'approve' is out of order" in r.message and "next step is 'verify'" in r.message
    r = await _refused(client, sessions, household.code, Step.SETTLE, "tc.nong", evidence=["UNC"])
    assert r.rule == "OutOfOrder"


async def test_role_not_allowed_by_the_policy_is_refused(client, sessions, household):
    r = await _refused(client, sessions, household.code, Step.VERIFY, "tc.hoang", evidence=["BB"])
    assert r.rule == "RoleNotAllowed"
    assert "role 'finance_officer' may not take step 'verify'" in r.message


async def test_actor_outside_the_households_jurisdiction_is_refused(client, sessions, household):
    other_commune = sample.commune_user("Cao Lộc", "Lộc Yên")
    r = await _refused(client, sessions, household.code, Step.VERIFY, other_commune, evidence=["BB"])
    assert r.rule == "OutsideJurisdiction"
    other_district = sample.district_user("Lộc Bình")
    r = await _refused(client, sessions, household.code, Step.VERIFY, other_district, evidence=["BB"])
    assert r.rule == "OutsideJurisdiction" and household.code in r.message


async def test_the_same_person_may_not_verify_and_approve(client, sessions, task_queue):
    # District officers may verify and may approve, but not both on one household. (The list is the district's
    # own import: the province officer, who did not import it, may approve.)
    items = make_households(1, district="Cao Lộc", commune="Hải Yến", support_type="new_build")
    report, (household,), current = await register(sessions, to_csv(items), "district.csv", DISTRICT)
    await start_workflows(client, task_queue, [household], current, importers=report.importers)
    await take_step(client, sessions, household.code, Step.VERIFY, DISTRICT, evidence=["BB"])
    await post_list(client, sessions, household.code)
    r = await _refused(client, sessions, household.code, Step.APPROVE, DISTRICT, evidence=["QĐ"])
    assert r.rule == "SegregationOfDuties"
    assert f"user {DISTRICT} took step 'verify'" in r.message
    ok = await take_step(client, sessions, household.code, Step.APPROVE, sample.PROVINCE_USER, evidence=["QĐ"])
    assert ok.to_stage is Stage.FUND_ALLOCATION


async def test_the_finance_officer_who_allocated_may_not_settle(client, sessions, household):
    for step, user, extra in (
        (Step.VERIFY, COMMUNE, {}),
        (Step.APPROVE, DISTRICT, {}),
        (Step.ALLOCATE, "tc.hoang", {"source": "NS-TINH"}),
        (Step.COMPLETE_CONSTRUCTION, COMMUNE, {}),
        (Step.ACCEPT, DISTRICT, {}),
    ):
        await take_step(client, sessions, household.code, step, user, evidence=["doc"], **extra)
    r = await _refused(client, sessions, household.code, Step.SETTLE, "tc.hoang", evidence=["UNC"])
    assert r.rule == "SegregationOfDuties"


async def test_a_step_without_evidence_is_refused(client, sessions, household):
    r = await _refused(client, sessions, household.code, Step.VERIFY, COMMUNE)
    assert r.rule == "EvidenceMissing"


async def test_send_back_and_cancel_need_a_reason(client, sessions, household):
    await take_step(client, sessions, household.code, Step.VERIFY, COMMUNE, evidence=["BB"])
    assert (await _refused(client, sessions, household.code, Step.SEND_BACK, DISTRICT)).rule == "ReasonMissing"
    assert (await _refused(client, sessions, household.code, Step.CANCEL, DISTRICT, reason=" ")).rule == "ReasonMissing"


async def test_send_back_from_the_first_stage_is_out_of_order(client, sessions, household):
    r = await _refused(client, sessions, household.code, Step.SEND_BACK, COMMUNE, reason="x")
    assert r.rule == "OutOfOrder" and "no earlier stage" in r.message


async def test_an_unknown_user_is_refused(client, sessions, household):
    r = await _refused(client, sessions, household.code, Step.VERIFY, "nobody", evidence=["BB"])
    assert r.rule == "UnknownUser"


async def test_the_engine_refuses_an_actor_the_users_table_does_not_know(client, sessions, household):
    """A client that bypasses the command line and invents an actor is refused inside the engine: unsigned, by
    the validator; even through a front door that signs whatever it is given, by the users table."""
    wid = workflow_id_for(household.code)
    handle = client.get_workflow_handle(wid)
    ghost = Actor(
        user_id="ghost",
        role="commune_officer",
        agency="UBND xã Hải Yến",
        jurisdiction=Jurisdiction(province="Lạng Sơn", district="Cao Lộc", commune="Hải Yến"),
    )
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(
            HouseholdWorkflow.verify, VerifyInput(actor=ghost, evidence=["BB"], findings=FINDINGS)
        )
    assert isinstance(caught.value.cause, ApplicationError) and caught.value.cause.type == "Unauthenticated"
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(
            HouseholdWorkflow.verify,
            _signed(VerifyInput(actor=ghost, evidence=["BB"], findings=FINDINGS), wid, Step.VERIFY),
        )
    assert isinstance(caught.value.cause, ApplicationError) and caught.value.cause.type == "UnknownUser"

    # A real user claiming a role the users table does not give them.
    promoted = Actor(
        user_id=COMMUNE,
        role="district_officer",
        agency="UBND Cao Lộc",
        jurisdiction=Jurisdiction(province="Lạng Sơn", district="Cao Lộc"),
    )
    await take_step(client, sessions, household.code, Step.VERIFY, DISTRICT, evidence=["BB"])
    await post_list(client, sessions, household.code)
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(
            HouseholdWorkflow.approve, _signed(ApproveInput(actor=promoted, evidence=["QĐ"]), wid, Step.APPROVE)
        )
    assert caught.value.cause.type == "ActorMismatch"
    assert (await household_state(client, household.code)).stage is Stage.APPROVAL


async def test_allocation_is_refused_when_the_source_is_short(client, sessions, task_queue):
    # A short source of the test's own, open only to its own programme: its money is no other test's to draw on,
    # and no other test's allocation changes what it holds.
    small = f"SMALL-{uuid.uuid4().hex[:6].upper()}"
    programme = await own_programme(sessions, [(small, 59_999_999)], category="donation")
    (household,) = await enroll(
        client,
        sessions,
        task_queue,
        make_households(1, district="Cao Lộc", commune="Hải Yến", support_type="new_build", programme=programme),
    )
    await take_step(client, sessions, household.code, Step.VERIFY, COMMUNE, evidence=["BB"])
    await take_step(client, sessions, household.code, Step.APPROVE, DISTRICT, evidence=["QĐ"])
    r = await _refused(client, sessions, household.code, Step.ALLOCATE, "tc.hoang", evidence=["PB"], source=small)
    assert r.rule == "InsufficientFunds" and "59,999,999 đồng free" in r.message
    async with sessions() as s:
        assert await s.scalar(select(func.count()).where(ledger_transfers.c.household_code == household.code)) == 0
    r = await _refused(client, sessions, household.code, Step.ALLOCATE, "tc.hoang", evidence=["PB"], source="NOPE")
    assert r.rule == "UnknownFundingSource"
    # The history alone says who was refused which step, and why (the local activity's failure keeps the record).
    history = await client.get_workflow_handle(workflow_id_for(household.code)).fetch_history()
    trail = await read_trail(history, SEALED)
    assert [
        (t.record.step, t.record.source, t.record.actor.user_id, t.refusal.split(":")[0])
        for t in trail.transitions
        if not t.recorded
    ] == [
        (Step.ALLOCATE, small, "tc.hoang", "InsufficientFunds"),
        (Step.ALLOCATE, "NOPE", "tc.hoang", "UnknownFundingSource"),
    ]


async def test_a_closed_household_takes_no_more_steps(client, sessions, household):
    await drive_one(client, sessions, household)
    assert (await household_state(client, household.code)).stage is Stage.CLOSED
    r = await _refused(client, sessions, household.code, Step.CANCEL, DISTRICT, reason="late")
    assert r.rule == "Closed"


async def test_only_an_admin_may_change_the_policy_of_a_household_in_flight(
    client, sessions, owner_sessions, household
):
    wid = workflow_id_for(household.code)
    handle = client.get_workflow_handle(wid)
    state = await household_state(client, household.code)
    async with sessions() as s:
        policy = await current_workflow_policy(s, date.today())
    district_actor = await _user_actor(sessions, DISTRICT)
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(
            HouseholdWorkflow.set_policy,
            _signed(SetPolicyInput(actor=district_actor, policy=policy), wid, Step.SET_POLICY),
        )
    assert caught.value.cause.type == "RoleNotAllowed"

    # The programme owner changes: from now on only district officers verify (a version the table holds).
    steps = dict(policy.steps)
    steps[Step.VERIFY] = steps[Step.VERIFY].model_copy(update={"roles": ["district_officer"]})
    version = f"{policy.version}-test-{household.code}"
    changed = policy.model_copy(update={"version": version, "steps": steps})
    await add_version(owner_sessions, changed, date(2098, 3, 15), sample.ADMIN_USER)  # future: not in force
    admin = await _user_actor(sessions, sample.ADMIN_USER)
    result = await handle.execute_update(
        HouseholdWorkflow.set_policy, _signed(SetPolicyInput(actor=admin, policy=changed), wid, Step.SET_POLICY)
    )
    assert (result.previous_version, result.version) == (state.policy_version, version)
    r = await _refused(client, sessions, household.code, Step.VERIFY, COMMUNE, evidence=["BB"])
    assert r.rule == "RoleNotAllowed" and version in r.message
    await take_step(client, sessions, household.code, Step.VERIFY, DISTRICT, evidence=["BB"])


def _signed(inp, workflow_id: str, step: Step):
    """The input as the suite's front door signs it for its actor (a front door that signs what it is given)."""
    return sign_input(FRONT_DOOR, inp, workflow_id=workflow_id, step=step.value, user_id=inp.actor.user_id)


async def _user_actor(sessions, user_id: str) -> Actor:
    async with sessions() as s:
        return await users.require_actor(s, user_id)
