"""What the settlement dossier reads (operations/dossier.py): the register of a commune or the province, the
funding sources' ledger accounts, the minutes of completion and acceptance, the approved changes, the payments
and the reform's handovers. Queries only."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import audit_log, funding_sources, handovers, household_changes, households, payments


async def source_accounts(session: AsyncSession) -> dict[int, str]:
    """Ledger account id → funding source code."""
    fs = funding_sources
    return {r.account_id: r.code for r in await session.execute(select(fs.c.account_id, fs.c.code))}


async def register(session: AsyncSession) -> dict[str, Row]:
    """Every registered household, by code."""
    h = households
    return {r.code: r for r in await session.execute(select(h).order_by(h.c.code))}


async def minutes(session: AsyncSession, codes: Sequence[str]) -> list[Row]:
    """(household, step, evidence, when) of each completion and acceptance step, in order."""
    a = audit_log.c
    return list(
        await session.execute(
            select(a.household_code, a.step, a.evidence, a.occurred_at)
            .where(a.household_code.in_(list(codes)), a.step.in_(("complete_construction", "accept")))
            .order_by(a.id)
        )
    )


async def changes(session: AsyncSession, codes: Sequence[str]) -> list[Row]:
    c = household_changes
    return list(await session.execute(select(c).where(c.c.household_code.in_(list(codes))).order_by(c.c.id)))


async def payments_of(session: AsyncSession, codes: Sequence[str]) -> list[Row]:
    p = payments
    return list(
        await session.execute(
            select(p).where(p.c.household_code.in_(list(codes))).order_by(p.c.household_code, p.c.tranche, p.c.attempt)
        )
    )


async def handovers_all(session: AsyncSession) -> list[Row]:
    return list(await session.execute(select(handovers).order_by(handovers.c.id)))
