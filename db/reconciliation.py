"""The rows the reconciliation report sums (operations/reconciliation.py): funding sources, households,
released tranches, every ledger transfer, decisions, current loans and the balances PostgreSQL keeps."""

from __future__ import annotations

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.finance import current_loans
from db.schema import decisions, funding_sources, household_tranches, households, ledger_accounts, ledger_transfers


async def sources(session: AsyncSession) -> list[Row]:
    """(code, name, category, is_state_budget, account_id) per funding source, state budget first, by code."""
    f = funding_sources.c
    q = select(f.code, f.name, f.category, f.is_state_budget, f.account_id).order_by(f.is_state_budget.desc(), f.code)
    return list((await session.execute(q)).all())


async def households_money(session: AsyncSession) -> list[Row]:
    """(code, district, decision_ref, stage, support_type, entitlement, reserved, paid) per household; the
    district is the one it was imported under (the old map: a household moved by the 2025 reform has none now)."""
    h = households.c
    q = select(
        h.code,
        h.old_district.label("district"),
        h.decision_ref,
        h.stage,
        h.support_type,
        h.entitlement,
        h.reserved,
        h.paid,
    )
    return list(await session.execute(q))


async def released_tranches(session: AsyncSession) -> set[tuple[str, int]]:
    """(household, tranche) of every tranche released to the payment channel."""
    t = household_tranches.c
    return {
        (r.household_code, r.tranche)
        for r in await session.execute(select(t.household_code, t.tranche).where(t.status == "released"))
    }


async def transfers(session: AsyncSession) -> list[Row]:
    """Every ledger transfer: (id, kind, code, debit_account_id, credit_account_id, amount, pending_id,
    household_code, tranche)."""
    t = ledger_transfers.c
    q = select(
        t.id,
        t.kind,
        t.code,
        t.debit_account_id,
        t.credit_account_id,
        t.amount,
        t.pending_id,
        t.household_code,
        t.tranche,
    )
    return list((await session.execute(q)).all())


async def decision_kinds(session: AsyncSession) -> list[Row]:
    """(ref, kind, supplements) per decision."""
    return list(await session.execute(select(decisions.c.ref, decisions.c.kind, decisions.c.supplements)))


async def loans(session: AsyncSession) -> list[Row]:
    """(household_code, amount, status) of each loan's current state."""
    current = current_loans()
    return list(await session.execute(select(current.c.household_code, current.c.amount, current.c.status)))


async def account_balances(session: AsyncSession) -> dict[int, Row]:
    """(id, debits_pending, debits_posted, credits_posted) per ledger account, by id."""
    a = ledger_accounts.c
    return {r.id: r for r in await session.execute(select(a.id, a.debits_pending, a.debits_posted, a.credits_posted))}
