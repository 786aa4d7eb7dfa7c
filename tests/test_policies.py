"""Publishing a new policy version reaches the households in flight; only a policy admin may publish."""

from __future__ import annotations

from datetime import date

import pytest

from core.errors import Refusal
from db.policy import current_workflow_policy
from models.household import Step
from operations import sample
from operations.actions import household_state
from operations.policies import add_version, push
from tests.conftest import FRONT_DOOR, enroll, make_households, take_step


async def test_a_published_version_is_applied_to_households_in_flight(client, sessions, owner_sessions, task_queue):
    items = await enroll(client, sessions, task_queue, make_households(3, district="Bắc Sơn", commune="Vũ Lễ"))
    async with sessions() as s:
        current = await current_workflow_policy(s, date.today())
    steps = dict(current.steps)
    steps[Step.VERIFY] = steps[Step.VERIFY].model_copy(update={"roles": ["district_officer"]})
    new = current.model_copy(update={"version": f"test-{items[0].code}", "steps": steps})

    with pytest.raises(Refusal) as denied:
        await add_version(owner_sessions, new, date(2100, 1, 1), sample.district_user("Bắc Sơn"))
    assert denied.value.rule == "RoleNotAllowed"

    await add_version(owner_sessions, new, date(2100, 1, 1), sample.ADMIN_USER)  # future: today's policy unchanged
    with pytest.raises(Refusal) as again:
        await add_version(owner_sessions, new, date(2100, 1, 2), sample.ADMIN_USER)
    assert again.value.rule == "PolicyExists"

    ids = " OR ".join(f"WorkflowId='{h.workflow_id}'" for h in items)
    report = await push(
        client, sessions, new, sample.ADMIN_USER, query=f"ExecutionStatus='Running' AND ({ids})", signer=FRONT_DOOR
    )
    assert (report.applied, report.refused) == (3, 0)
    for h in items:
        assert (await household_state(client, h.code)).policy_version == new.version
    with pytest.raises(Refusal) as refused:
        await take_step(
            client, sessions, items[0].code, Step.VERIFY, sample.commune_user("Bắc Sơn", "Vũ Lễ"), evidence=["BB"]
        )
    assert refused.value.rule == "RoleNotAllowed"
