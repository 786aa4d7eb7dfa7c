"""Reports from the read model and the ledger, and the checks the demo and the tests rely on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

from core import formatting
from core.formatting import VIETNAM, amount
from db import gazetteer as gazetteer_db
from db import ledger, policy
from db import reports as report_db
from db.engine import Session as AsyncSession
from models.actor import Jurisdiction
from models.gazetteer import NO_DISTRICT
from models.household import BeneficiaryGroup, Stage, SupportType

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


async def district_stages(
    session: AsyncSession, jurisdiction: Jurisdiction | None = None, *, new_map: bool = False
) -> list[DistrictStageRow]:
    """Households by unit and stage, of those `jurisdiction` covers (an officer's: all when None): by the district
    each was imported under (the old map), or with `new_map` by the commune of the two-tier map it is in (moved)
    or its old unit's successor is (closed before the reform); the same households either way."""
    if not new_map:
        rows = await report_db.district_stages(session, jurisdiction)
        table = [
            DistrictStageRow(d or NO_DISTRICT, s, n, nb, rp, int(res), int(paid)) for d, s, n, nb, rp, res, paid in rows
        ]
    else:
        maps = await gazetteer_db.old_and_new(session)
        cells: dict[tuple[str, str], list[int]] = {}
        for r in await report_db.unit_stages(session, jurisdiction):
            old_district, old_commune, new = maps[r.code]
            cell = cells.setdefault((new or f"{old_commune} ({old_district or NO_DISTRICT})", r.stage), [0, 0, 0, 0, 0])
            cell[0] += 1
            cell[1] += r.support_type == "new_build"
            cell[2] += r.support_type == "repair"
            cell[3] += int(r.reserved)
            cell[4] += int(r.paid)
        table = [DistrictStageRow(unit, stage, *c) for (unit, stage), c in cells.items()]
    table.sort(key=lambda r: (r.district, STAGE_ORDER.index(r.stage)))
    return table


async def build(session: AsyncSession, today: date | None = None, *, new_map: bool = False) -> Report:
    table = await district_stages(session, new_map=new_map)
    return Report(
        by_district_stage=table,
        by_source=await ledger.source_balances(session),
        by_decision=await by_decision(session, today or formatting.today()),
    )


async def by_decision(session: AsyncSession, today: date) -> list[DecisionRow]:
    rows = await report_db.by_decision(session)
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
    rows = await report_db.settled(session)
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
                f"household {code}: read model paid {amount(paid, 'en')}, ledger posted {amount(posted, 'en')}, "
                f"policy {amount(amounts[key], 'en')}"
            )
    return problems


async def stage_counts(session: AsyncSession) -> dict[str, int]:
    return await report_db.stage_counts(session)


async def support_totals(session: AsyncSession, decision_ref: str | None = None) -> dict[str, int]:
    nb, rp, paid = await report_db.support_totals(session, decision_ref)
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


async def deadline_progress(
    session: AsyncSession, today: date, jurisdiction: Jurisdiction | None = None
) -> list[DeadlineProgress]:
    """Each programme deadline's households covered and closed, of those `jurisdiction` covers (all when None)."""
    return [
        DeadlineProgress(name, due, basis, n, closed, (due - today).days)
        for name, due, basis, n, closed in await report_db.deadlines(session, jurisdiction)
    ]
