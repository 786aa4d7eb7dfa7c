"""After the money, in PostgreSQL (migration 0019): the paid households a verification plan is drawn from, the
risks that put a household in every plan, the plans, their answers, and grievances with their resolutions.
Queries and inserts only; the caller's transaction commits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import (
    double_support_overrides,
    grievance_resolutions,
    grievances,
    household_changes,
    households,
    payments,
    verification_answers,
    verification_households,
    verification_plans,
    verification_population,
)

PAYMENT_CATEGORIES = ("payment_not_received", "payment_issue")


async def paid_households(
    session: AsyncSession,
    *,
    decision_ref: str | None = None,
    district: str | None = None,
    commune: str | None = None,
    paid_from: date | None = None,
    paid_to: date | None = None,
) -> list[str]:
    """Households with a payment the channel confirmed (in the period, by the Vietnam date it was confirmed),
    of the decision and units given."""
    p, h = payments, households
    day = func.date(func.timezone("Asia/Ho_Chi_Minh", p.c.resolved_at))
    q = select(h.c.code).where(
        exists().where(
            p.c.household_code == h.c.code,
            p.c.status == "confirmed",
            *([day >= paid_from] if paid_from else []),
            *([day <= paid_to] if paid_to else []),
        )
    )
    if decision_ref:
        q = q.where(h.c.decision_ref == decision_ref)
    if district:
        q = q.where(h.c.district == district)
    if commune:
        q = q.where(h.c.commune == commune)
    return list(await session.scalars(q.order_by(h.c.code)))


async def risks(session: AsyncSession, codes: Iterable[str]) -> dict[str, str]:
    """Why a household goes into every plan: its payee or support type changed, a payment of it failed, was
    sent again or escalated, or a double-support match of it was overridden. Code → the reasons."""
    codes = list(codes)
    found: dict[str, list[str]] = {}

    def add(code: str, why: str) -> None:
        if why not in found.setdefault(code, []):
            found[code].append(why)

    c = household_changes
    for code, kind in await session.execute(
        select(c.c.household_code, c.c.kind).where(
            c.c.household_code.in_(codes), c.c.kind.in_(("payee", "support_type"))
        )
    ):
        add(code, f"{kind.replace('_', ' ')} changed")
    p = payments
    for code, status, _attempt, overdue in await session.execute(
        select(p.c.household_code, p.c.status, p.c.attempt, p.c.overdue).where(
            p.c.household_code.in_(codes), or_(p.c.status == "failed", p.c.attempt > 1, p.c.overdue.is_(True))
        )
    ):
        add(code, "payment escalated" if overdue else "payment failed" if status == "failed" else "payment retried")
    o = double_support_overrides
    for (code,) in await session.execute(select(o.c.household_code).where(o.c.household_code.in_(codes))):
        add(code, "double-support match overridden")
    return {code: "; ".join(whys) for code, whys in found.items()}


async def add_plan(
    session: AsyncSession, drawn_from: Mapping[str, str | None], reasons: Mapping[str, str], **values: object
) -> int:
    """Store a plan, the population it was drawn from (code → risk or None) and the households drawn."""
    plan_id = await session.scalar(verification_plans.insert().values(**values).returning(verification_plans.c.id))
    await session.execute(
        verification_population.insert(),
        [{"plan_id": plan_id, "household_code": code, "risk": risk} for code, risk in drawn_from.items()],
    )
    if reasons:
        await session.execute(
            verification_households.insert(),
            [{"plan_id": plan_id, "household_code": code, "reason": why} for code, why in reasons.items()],
        )
    return plan_id


async def plans(session: AsyncSession) -> list:
    vp = verification_plans
    return list(await session.execute(select(vp).order_by(vp.c.id.desc())))


async def population(session: AsyncSession, plan_id: int) -> dict[str, str | None]:
    vp = verification_population
    return {r.household_code: r.risk for r in await session.execute(select(vp).where(vp.c.plan_id == plan_id))}


async def drawn(session: AsyncSession, plan_id: int) -> dict[str, str]:
    vh = verification_households
    return {r.household_code: r.reason for r in await session.execute(select(vh).where(vh.c.plan_id == plan_id))}


async def plan(session: AsyncSession, plan_id: int):
    return (await session.execute(select(verification_plans).where(verification_plans.c.id == plan_id))).one_or_none()


@dataclass(frozen=True)
class PlanLine:
    household_code: str
    head_of_household: str
    district: str | None
    commune: str
    reason: str
    answer: str | None
    amount: int | None
    asked_by: str | None
    channel: str | None
    note: str | None
    answered_at: datetime | None
    paid: int


async def plan_lines(session: AsyncSession, plan_id: int) -> list[PlanLine]:
    """The plan's households with their answers (None: not asked yet) and what the channel confirmed paid."""
    vh, va, h, p = verification_households, verification_answers, households, payments
    paid = (
        select(func.coalesce(func.sum(p.c.amount), 0))
        .where(p.c.household_code == vh.c.household_code, p.c.status == "confirmed")
        .scalar_subquery()
    )
    rows = await session.execute(
        select(
            vh.c.household_code,
            h.c.head_of_household,
            h.c.district,
            h.c.commune,
            vh.c.reason,
            va.c.answer,
            va.c.amount,
            va.c.asked_by,
            va.c.channel,
            va.c.note,
            va.c.answered_at,
            paid.label("paid"),
        )
        .join(h, h.c.code == vh.c.household_code)
        .outerjoin(va, and_(va.c.plan_id == vh.c.plan_id, va.c.household_code == vh.c.household_code))
        .where(vh.c.plan_id == plan_id)
        .order_by(vh.c.household_code)
    )
    return [PlanLine(**r._mapping) for r in rows]


async def in_plan(session: AsyncSession, plan_id: int, household_code: str) -> bool:
    vh = verification_households
    return bool(
        await session.scalar(select(func.count()).where(vh.c.plan_id == plan_id, vh.c.household_code == household_code))
    )


async def add_answer(session: AsyncSession, **values: object) -> bool:
    """Record a household's answer once; False when it was answered before (the first answer stands)."""
    done = await session.scalar(
        pg_insert(verification_answers)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["plan_id", "household_code"])
        .returning(verification_answers.c.household_code)
    )
    return done is not None


async def answer_of(session: AsyncSession, plan_id: int, household_code: str):
    va = verification_answers
    return (
        await session.execute(select(va).where(va.c.plan_id == plan_id, va.c.household_code == household_code))
    ).one_or_none()


async def last_releaser(session: AsyncSession, household_code: str) -> str | None:
    """Who released the household's latest confirmed payment: the paying unit a payment grievance is about."""
    p = payments
    return await session.scalar(
        select(p.c.released_by)
        .where(p.c.household_code == household_code, p.c.status == "confirmed", p.c.released_by.is_not(None))
        .order_by(p.c.resolved_at.desc())
        .limit(1)
    )


async def payment_ids(session: AsyncSession, household_code: str) -> list[str]:
    p = payments
    return list(
        await session.scalars(
            select(p.c.payment_id).where(p.c.household_code == household_code).order_by(p.c.tranche, p.c.attempt)
        )
    )


async def add_grievance(session: AsyncSession, **values: object) -> tuple[int, bool]:
    """File a grievance once by its idempotency key: (its id, whether it is new)."""
    g = grievances
    new = await session.scalar(pg_insert(g).values(**values).on_conflict_do_nothing().returning(g.c.id))
    if new is not None:
        return new, True
    return await session.scalar(select(g.c.id).where(g.c.idempotency_key == values["idempotency_key"])), False


async def releasers(session: AsyncSession, household_code: str) -> set[str]:
    """Everyone who released a payment of the household: none of them resolves its payment grievances."""
    p = payments
    return set(
        await session.scalars(
            select(p.c.released_by).where(p.c.household_code == household_code, p.c.released_by.is_not(None))
        )
    )


async def grievance(session: AsyncSession, grievance_id: int):
    return (await session.execute(select(grievances).where(grievances.c.id == grievance_id))).one_or_none()


async def resolution_of(session: AsyncSession, grievance_id: int):
    r = grievance_resolutions
    return (await session.execute(select(r).where(r.c.grievance_id == grievance_id))).one_or_none()


async def add_resolution(session: AsyncSession, **values: object) -> bool:
    """Record the resolution; False when the grievance was resolved already (by a concurrent resolution too)."""
    r = grievance_resolutions
    done = await session.scalar(pg_insert(r).values(**values).on_conflict_do_nothing().returning(r.c.grievance_id))
    return done is not None


async def open_payment_grievances(session: AsyncSession, household_code: str) -> list[int]:
    """The household's grievances of a payment category without a resolution: its settlement waits for them."""
    g, r = grievances, grievance_resolutions
    return list(
        await session.scalars(
            select(g.c.id)
            .where(
                g.c.household_code == household_code,
                g.c.category.in_(PAYMENT_CATEGORIES),
                ~exists().where(r.c.grievance_id == g.c.id),
            )
            .order_by(g.c.id)
        )
    )


@dataclass(frozen=True)
class GrievanceLine:
    id: int
    household_code: str
    district: str | None
    commune: str
    category: str
    said: str
    responsible: str
    opened_by: str
    opened_at: datetime
    due_on: date
    plan_id: int | None
    outcome: str | None
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None


async def grievance_lines(
    session: AsyncSession, *, codes: Iterable[str] | None = None, open_only: bool = False
) -> list[GrievanceLine]:
    g, r, h = grievances, grievance_resolutions, households
    q = (
        select(
            g.c.id,
            g.c.household_code,
            h.c.district,
            h.c.commune,
            g.c.category,
            g.c.said,
            g.c.responsible,
            g.c.opened_by,
            g.c.opened_at,
            g.c.due_on,
            g.c.plan_id,
            r.c.outcome,
            r.c.resolution,
            r.c.resolved_by,
            r.c.resolved_at,
        )
        .join(h, h.c.code == g.c.household_code)
        .outerjoin(r, r.c.grievance_id == g.c.id)
        .order_by(g.c.due_on, g.c.id)
    )
    if codes is not None:
        q = q.where(g.c.household_code.in_(list(codes)))
    if open_only:
        q = q.where(r.c.grievance_id.is_(None))
    return [GrievanceLine(**row._mapping) for row in await session.execute(q)]
