"""Payout progress over many households: their tranches by status, their payment instructions by answer."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import household_tranches, payments


async def tranche_counts(
    session: AsyncSession, codes: list[str] | None, statuses: tuple[str, ...]
) -> dict[tuple[int, str], int]:
    """How many of these households' tranches (all households' with `codes` None) are in each of these
    statuses: {(tranche, status): n}."""
    t = household_tranches.c
    q = select(t.tranche, t.status, func.count()).where(t.status.in_(statuses)).group_by(t.tranche, t.status)
    if codes is not None:
        q = q.where(t.household_code.in_(codes))
    return {(n, status): count for n, status, count in await session.execute(q)}


async def payment_counts(session: AsyncSession, codes: list[str]) -> dict[str, int]:
    """Payment instructions of these households by status (sent, confirmed, failed)."""
    p = payments.c
    q = select(p.status, func.count()).where(p.household_code.in_(codes)).group_by(p.status)
    return dict((await session.execute(q)).all())
