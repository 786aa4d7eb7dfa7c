"""Reports from the read model and the ledger, and the checks the demo and the tests rely on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import ledger, policy
from db.schema import audit_log, households, ledger_accounts, programme_deadlines
from models.household import BeneficiaryGroup, Stage, SupportType

VIETNAM = timezone(timedelta(hours=7))
STAGE_ORDER = [s.value for s in Stage]


@dataclass(frozen=True)
class DistrictStageRow:
    district: str
    stage: str
    households: int
    new_builds: int
    repairs: int
    reserved: int
    paid: int


@dataclass(frozen=True)
class DecisionRow:
    """One approving decision's list: its houses, the support they are entitled to at today's policy, and
    what has been reserved and paid for them so far."""

    decision_ref: str
    households: int
    new_builds: int
    repairs: int
    entitled: int
    reserved: int
    paid: int


@dataclass(frozen=True)
class Report:
    by_district_stage: list[DistrictStageRow]
    by_source: list[ledger.SourceBalance]
    by_decision: list[DecisionRow]

    def as_json(self) -> dict:
        return {
            "by_decision": [asdict(r) for r in self.by_decision],
            "by_district_stage": [asdict(r) for r in self.by_district_stage],
            "by_source": [asdict(s) | {"free": s.free} for s in self.by_source],
            "totals": {
                "households": sum(r.households for r in self.by_district_stage),
                "new_builds": sum(r.new_builds for r in self.by_district_stage),
                "repairs": sum(r.repairs for r in self.by_district_stage),
                "reserved": sum(r.reserved for r in self.by_district_stage),
                "paid": sum(r.paid for r in self.by_district_stage),
            },
        }


async def district_stages(session: AsyncSession, where: Sequence = ()) -> list[DistrictStageRow]:
    """Households by district and stage, of those `where` selects (an officer's jurisdiction: all when empty)."""
    h = households.c
    rows = await session.execute(
        select(
            h.district,
            h.stage,
            func.count(),
            func.count().filter(h.support_type == SupportType.NEW_BUILD.value),
            func.count().filter(h.support_type == SupportType.REPAIR.value),
            func.coalesce(func.sum(h.reserved), 0),
            func.coalesce(func.sum(h.paid), 0),
        )
        .where(*where)
        .group_by(h.district, h.stage)
    )
    table = [DistrictStageRow(d, s, n, nb, rp, int(res), int(paid)) for d, s, n, nb, rp, res, paid in rows]
    table.sort(key=lambda r: (r.district, STAGE_ORDER.index(r.stage)))
    return table


async def build(session: AsyncSession, today: date | None = None) -> Report:
    table = await district_stages(session)
    return Report(
        by_district_stage=table,
        by_source=await ledger.source_balances(session),
        by_decision=await by_decision(session, today or datetime.now(VIETNAM).date()),
    )


async def by_decision(session: AsyncSession, today: date) -> list[DecisionRow]:
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
    totals: dict[str, list[int]] = {}
    amounts: dict[tuple[str, str], int] = {}
    for ref, support, group, n, reserved, paid in rows:
        if (support, group) not in amounts:
            amounts[support, group] = await policy.entitlement(
                session, SupportType(support), BeneficiaryGroup(group), today
            )
        t = totals.setdefault(ref, [0, 0, 0, 0, 0, 0])
        new = support == SupportType.NEW_BUILD.value
        for i, v in enumerate((n, n if new else 0, 0 if new else n, n * amounts[support, group], reserved, paid)):
            t[i] += int(v)
    return [DecisionRow(ref, *t) for ref, t in sorted(totals.items())]


async def reconcile_households(session: AsyncSession) -> list[str]:
    """For every settled household: paid in the read model = posted to its ledger account = the policy
    amount in force on the day its funds were allocated (from the audit log). Returns the mismatches."""
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
    problems: list[str] = []
    amounts: dict[tuple, int] = {}
    for code, support, group, paid, posted, at in rows:
        if at is None:
            problems.append(f"household {code} is closed but the audit log has no allocation")
            continue
        key = (support, group, at.astimezone(VIETNAM).date())
        if key not in amounts:
            amounts[key] = await policy.entitlement(session, SupportType(support), BeneficiaryGroup(group), key[2])
        if not (paid == posted == amounts[key]):
            problems.append(
                f"household {code}: read model paid {paid:,}, ledger posted {posted:,}, policy {amounts[key]:,}"
            )
    return problems


async def stage_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(households.c.stage, func.count()).group_by(households.c.stage))
    return dict(rows.all())


async def support_totals(session: AsyncSession, decision_ref: str | None = None) -> dict[str, int]:
    h = households.c
    q = select(
        func.count().filter(h.support_type == "new_build"),
        func.count().filter(h.support_type == "repair"),
        func.coalesce(func.sum(case((h.stage == "closed", h.paid), else_=0)), 0),
    )
    if decision_ref:
        q = q.where(h.decision_ref == decision_ref)
    nb, rp, paid = (await session.execute(q)).one()
    return {"new_builds": nb, "repairs": rp, "paid": int(paid)}


@dataclass(frozen=True)
class DeadlineProgress:
    """One programme deadline: the houses it covers (in the asked area), how many are finished, and the
    days left on `today` (negative once past)."""

    name: str
    due_on: date
    legal_basis: str
    covered: int
    closed: int
    days_left: int

    @property
    def remaining(self) -> int:
        return self.covered - self.closed

    @property
    def missed(self) -> bool:
        return self.days_left < 0 and self.remaining > 0


async def deadline_progress(session: AsyncSession, today: date, where: Sequence = ()) -> list[DeadlineProgress]:
    """Each programme deadline's households covered and closed, of those `where` selects (a jurisdiction)."""
    h, d = households.c, programme_deadlines.c
    covers = and_(
        or_(d.support_types.is_(None), h.support_type == func.any(d.support_types)),
        or_(d.beneficiary_groups.is_(None), h.beneficiary_group == func.any(d.beneficiary_groups)),
        h.stage != Stage.CANCELLED.value,
        *where,
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
    return [
        DeadlineProgress(name, due, basis, n, closed, (due - today).days)
        for name, due, basis, n, closed in await session.execute(q)
    ]
