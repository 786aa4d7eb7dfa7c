"""The report queries over the read model, the audit log and the programme's deadlines: counts and sums by
district, stage, decision and deadline, as plain rows (operations/reports.py shapes them into the report)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.households import in_jurisdiction
from db.schema import audit_log, households, ledger_accounts, programme_deadlines
from models.actor import Jurisdiction
from models.household import Stage, SupportType


def _within(jurisdiction: Jurisdiction | None) -> list:
    return in_jurisdiction(jurisdiction) if jurisdiction is not None else []


async def district_stages(
    session: AsyncSession, jurisdiction: Jurisdiction | None = None
) -> list[tuple[str, str, int, int, int, int, int]]:
    """(district, stage, households, new builds, repairs, reserved, paid) of the households `jurisdiction`
    covers (all when None), one row per district and stage: the district each was imported under (the old map;
    a household the 2025 reform moved has no district now)."""
    h = households.c
    rows = await session.execute(
        select(
            h.old_district,
            h.stage,
            func.count(),
            func.count().filter(h.support_type == SupportType.NEW_BUILD.value),
            func.count().filter(h.support_type == SupportType.REPAIR.value),
            func.coalesce(func.sum(h.reserved), 0),
            func.coalesce(func.sum(h.paid), 0),
        )
        .where(*_within(jurisdiction))
        .group_by(h.old_district, h.stage)
    )
    return [tuple(r) for r in rows]


async def unit_stages(session: AsyncSession, jurisdiction: Jurisdiction | None = None) -> list[Row]:
    """(code, stage, support_type, reserved, paid) per household `jurisdiction` covers: what the new map's
    dashboard groups by commune (operations/reports.py, with the gazetteer's successions)."""
    h = households.c
    q = select(h.code, h.stage, h.support_type, h.reserved, h.paid).where(*_within(jurisdiction))
    return list((await session.execute(q)).all())


async def by_decision(session: AsyncSession) -> list[tuple[str, str, str, int, int, int]]:
    """(decision, support type, group, households, reserved, paid), one row per decision, type and group."""
    h = households.c
    rows = await session.execute(
        select(
            h.decision_ref,
            h.support_type,
            h.beneficiary_group,
            func.count(),
            func.coalesce(func.sum(h.reserved), 0),
            func.coalesce(func.sum(h.paid), 0),
        ).group_by(h.decision_ref, h.support_type, h.beneficiary_group)
    )
    return [tuple(r) for r in rows]


async def settled(session: AsyncSession) -> list[tuple[str, str, str, int, int, datetime | None]]:
    """Every closed household: (code, support type, group, paid in the read model, posted to its ledger
    account, when the audit log first recorded its allocation — None when it has none)."""
    allocated_at = (
        select(audit_log.c.household_code, func.min(audit_log.c.occurred_at).label("at"))
        .where(audit_log.c.step == "allocate")
        .group_by(audit_log.c.household_code)
        .subquery()
    )
    rows = await session.execute(
        select(
            households.c.code,
            households.c.support_type,
            households.c.beneficiary_group,
            households.c.paid,
            func.coalesce(ledger_accounts.c.credits_posted, 0),
            allocated_at.c.at,
        )
        .outerjoin(ledger_accounts, ledger_accounts.c.code == func.concat("HH:", households.c.code))
        .outerjoin(allocated_at, allocated_at.c.household_code == households.c.code)
        .where(households.c.stage == Stage.CLOSED.value)
    )
    return [tuple(r) for r in rows]


async def stage_counts(session: AsyncSession) -> dict[str, int]:
    """Households by stage."""
    rows = await session.execute(select(households.c.stage, func.count()).group_by(households.c.stage))
    return dict(rows.all())


async def support_totals(session: AsyncSession, decision_ref: str | None = None) -> Row:
    """(new builds, repairs, paid to closed households) of all households, or of one decision's."""
    h = households.c
    q = select(
        func.count().filter(h.support_type == "new_build"),
        func.count().filter(h.support_type == "repair"),
        func.coalesce(func.sum(case((h.stage == "closed", h.paid), else_=0)), 0),
    )
    if decision_ref:
        q = q.where(h.decision_ref == decision_ref)
    return (await session.execute(q)).one()


async def deadlines(session: AsyncSession, jurisdiction: Jurisdiction | None = None) -> list[tuple]:
    """(name, due on, legal basis, households covered, of which closed) per programme deadline, earliest
    first, counting the households `jurisdiction` covers (all when None) and not cancelled."""
    h, d = households.c, programme_deadlines.c
    covers = and_(
        or_(d.support_types.is_(None), h.support_type == func.any(d.support_types)),
        or_(d.beneficiary_groups.is_(None), h.beneficiary_group == func.any(d.beneficiary_groups)),
        h.stage != Stage.CANCELLED.value,
        *_within(jurisdiction),
    )
    q = (
        select(
            d.name,
            d.due_on,
            d.legal_basis,
            func.count(h.code),
            func.count(h.code).filter(h.stage == Stage.CLOSED.value),
        )
        .select_from(programme_deadlines.outerjoin(households, covers))
        .group_by(d.id, d.name, d.due_on, d.legal_basis)
        .order_by(d.due_on)
    )
    return [tuple(r) for r in await session.execute(q)]
