"""Publishing a new workflow policy version: who may take which step changes mid-programme (agencies are
data). The version is stored with its effective date, then applied to every household in flight."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date

from temporalio.client import Client, WorkflowUpdateFailedError

from core.errors import Refusal
from core.signing import SigningRing, sign_input
from db import policy as policy_db
from db import users
from db.engine import Sessions
from models.actions import SetPolicyInput
from models.household import Step
from models.policy import WorkflowPolicy
from workflows.household import HouseholdWorkflow


@dataclass
class PushReport:
    applied: int = 0
    refused: int = 0


async def add_version(owner: Sessions, new: WorkflowPolicy, effective_from: date, user_id: str) -> None:
    """Store a new version, published by `user_id` (a policy admin whom the front door has authenticated).
    `owner` are the schema owner's sessions: who may act is policy data, so the application's login may read
    policies but not insert one (migration 0010); a process holding only that login cannot publish a policy
    without segregation of duties."""
    async with owner() as session, session.begin():
        actor = await users.require_actor(session, user_id)
        current = await policy_db.policy_today(session)
        if actor.role not in current.policy_admin_roles:
            raise Refusal("RoleNotAllowed", f"role {actor.role!r} may not publish workflow policies")
        if await policy_db.workflow_policy_exists(session, new.version):
            raise Refusal("PolicyExists", f"policy version {new.version} exists; versions are never edited")
        await policy_db.insert_workflow_policy(session, new, effective_from)


IN_FLIGHT = "WorkflowType='HouseholdWorkflow' AND ExecutionStatus='Running'"


async def push(
    client: Client,
    sessions: Sessions,
    new: WorkflowPolicy,
    user_id: str,
    concurrency: int = 32,
    query: str = IN_FLIGHT,
    *,
    signer: SigningRing,
) -> PushReport:
    """Apply the policy to every running household workflow, as `user_id`, whom the calling front door has
    authenticated: each change is signed with its ring (`signer`) for that household, and each household
    checks the signature, the admin and (its recording activity) that the version is the stored one."""
    async with sessions() as session:
        actor = await users.require_actor(session, user_id)
    report = PushReport()
    gate = asyncio.Semaphore(concurrency)

    async def apply(workflow_id: str) -> None:
        async with gate:
            try:
                inp = sign_input(
                    signer,
                    SetPolicyInput(actor=actor, policy=new),
                    workflow_id=workflow_id,
                    step=Step.SET_POLICY.value,
                    user_id=actor.user_id,
                )
                await client.get_workflow_handle(workflow_id).execute_update(HouseholdWorkflow.set_policy, inp)
                report.applied += 1
            except WorkflowUpdateFailedError:
                report.refused += 1

    await asyncio.gather(*[apply(w.id) async for w in client.list_workflows(query)])
    return report
