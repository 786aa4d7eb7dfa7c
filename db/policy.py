"""Versioned policy data: the workflow policy and the support amount per house."""

from __future__ import annotations

from datetime import date

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Refusal
from core.formatting import today
from db.schema import support_amounts, workflow_policies
from models.household import BeneficiaryGroup, SupportType
from models.policy import WorkflowPolicy


async def current_workflow_policy(session: AsyncSession, as_of: date) -> WorkflowPolicy:
    doc = await session.scalar(
        select(workflow_policies.c.document)
        .where(workflow_policies.c.effective_from <= as_of)
        .order_by(workflow_policies.c.effective_from.desc())
        .limit(1)
    )
    if doc is None:
        raise Refusal("NoPolicy", f"no workflow policy is in effect on {as_of.isoformat()}")
    return WorkflowPolicy.model_validate(doc)


async def policy_today(session: AsyncSession) -> WorkflowPolicy:
    """The workflow policy in effect today in Vietnam: who may use the pages, finance and accounts now."""
    return await current_workflow_policy(session, today())


async def entitlement(session: AsyncSession, support_type: SupportType, group: BeneficiaryGroup, as_of: date) -> int:
    """Support for one house on a date; a group-specific level wins over the all-groups level."""
    t = support_amounts
    amount = await session.scalar(
        select(t.c.amount)
        .where(t.c.support_type == support_type.value)
        .where(or_(t.c.beneficiary_group == group.value, t.c.beneficiary_group.is_(None)))
        .where(t.c.effective_from <= as_of)
        .where(or_(t.c.effective_to.is_(None), t.c.effective_to > as_of))
        .order_by(t.c.beneficiary_group.is_(None), t.c.effective_from.desc())
        .limit(1)
    )
    if amount is None:
        raise Refusal(
            "NoSupportLevel",
            f"no support amount for {support_type.value} / {group.value} is in effect on {as_of.isoformat()}",
        )
    return int(amount)


async def workflow_policy(session: AsyncSession, version: str) -> WorkflowPolicy:
    """A workflow policy by its version (the one a household's workflow runs under)."""
    found = await stored_workflow_policy(session, version)
    if found is None:
        raise Refusal("NoPolicy", f"no workflow policy {version!r}")
    return found


async def stored_workflow_policy(session: AsyncSession, version: str | None) -> WorkflowPolicy | None:
    """The policy table's version `version`, or None when it holds no such version."""
    if version is None:
        return None
    doc = await session.scalar(select(workflow_policies.c.document).where(workflow_policies.c.version == version))
    return WorkflowPolicy.model_validate(doc) if doc is not None else None


async def all_workflow_policies(session: AsyncSession) -> dict[str, dict]:
    """Every stored policy version's document, by version."""
    return {r.version: dict(r.document) for r in await session.execute(select(workflow_policies))}


async def workflow_policy_exists(session: AsyncSession, version: str) -> bool:
    return bool(await session.scalar(select(workflow_policies.c.version).where(workflow_policies.c.version == version)))


async def insert_workflow_policy(session: AsyncSession, policy: WorkflowPolicy, effective_from: date) -> None:
    """Store a new policy version (versions are never edited; the caller checks it is new)."""
    await session.execute(
        insert(workflow_policies).values(
            version=policy.version, effective_from=effective_from, document=policy.model_dump(mode="json")
        )
    )
