"""Before the money, in PostgreSQL: a change request as its signed step recorded it, and an approved change
applied to the register (migration 0016's triggers let the support type and the payee change only this way)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import audit_log, funding_sources, household_changes, household_tranches, households, ledger_transfers


@dataclass(frozen=True)
class RequestedChange:
    audit_id: int
    kind: str
    value: str | None
    requested_by: str


async def requested_change(session: AsyncSession, household_code: str, seq: int) -> RequestedChange | None:
    """The change requested by the household's step `seq`, as its signed input says (None: no such request)."""
    row = (
        await session.execute(
            select(audit_log.c.id, audit_log.c.actor_user_id, audit_log.c.signed_input).where(
                audit_log.c.household_code == household_code,
                audit_log.c.seq == seq,
                audit_log.c.step == "request_change",
            )
        )
    ).one_or_none()
    if row is None or not row.signed_input:
        return None
    signed = row.signed_input
    value = signed.get("support_type") or signed.get("payee")
    return RequestedChange(row.id, signed.get("kind"), value, row.actor_user_id)


async def decided(session: AsyncSession, household_code: str, seq: int) -> bool:
    """Whether the change requested at step `seq` was decided already (approved or refused)."""
    rows = await session.execute(
        select(audit_log.c.signed_input).where(
            audit_log.c.household_code == household_code, audit_log.c.step == "decide_change"
        )
    )
    return any((r.signed_input or {}).get("change") == seq for r in rows)


async def apply_change(
    session: AsyncSession,
    *,
    household_code: str,
    request: RequestedChange,
    decision_audit_id: int,
    approved_by: str,
    old_value: str | None,
) -> None:
    """Write the approved change's row, then the register's column it changes (a withdrawal changes none)."""
    await session.execute(
        insert(household_changes).values(
            household_code=household_code,
            kind=request.kind,
            old_value=old_value,
            new_value=request.value,
            request_audit_id=request.audit_id,
            decision_audit_id=decision_audit_id,
            requested_by=request.requested_by,
            approved_by=approved_by,
        )
    )
    column = {"support_type": "support_type", "payee": "payee"}.get(request.kind)
    if column:
        await session.execute(
            update(households).where(households.c.code == household_code).values({column: request.value})
        )


async def payee(session: AsyncSession, household_code: str) -> str | None:
    return await session.scalar(select(households.c.payee).where(households.c.code == household_code))


async def set_tranche_amounts(session: AsyncSession, household_code: str, amounts: dict[int, int]) -> None:
    """The read model's amount of each tranche re-reserved by a change of support type."""
    for n, amount in amounts.items():
        await session.execute(
            update(household_tranches)
            .where(household_tranches.c.household_code == household_code, household_tranches.c.tranche == n)
            .values(amount=amount)
        )


@dataclass(frozen=True)
class UnpaidPiece:
    id: int
    tranche: int
    source: str
    amount: int


async def tranches_in_flight(session: AsyncSession, household_code: str) -> list[int]:
    """The household's tranches authorised or released, not yet answered by the channel."""
    t = household_tranches
    rows = await session.execute(
        select(t.c.tranche).where(t.c.household_code == household_code, t.c.status.in_(("authorised", "released")))
    )
    return sorted(rows.scalars())


async def unpaid_pieces(session: AsyncSession, household_code: str, ids: list[int]) -> list[UnpaidPiece]:
    """Of the pending transfers `ids`: those of this household, unresolved, of a tranche planned or due."""
    lt, fs, ht = ledger_transfers, funding_sources, household_tranches
    resolved = select(lt.c.pending_id).where(lt.c.pending_id.is_not(None), lt.c.household_code == household_code)
    rows = await session.execute(
        select(lt.c.id, lt.c.tranche, lt.c.amount, fs.c.code)
        .join(fs, fs.c.account_id == lt.c.debit_account_id)
        .join(ht, (ht.c.household_code == lt.c.household_code) & (ht.c.tranche == lt.c.tranche))
        .where(
            lt.c.id.in_(ids),
            lt.c.household_code == household_code,
            lt.c.kind == "pending",
            lt.c.id.not_in(resolved),
            ht.c.status.in_(("planned", "due")),
        )
        .order_by(lt.c.tranche, lt.c.id)
    )
    return [UnpaidPiece(r.id, r.tranche, r.code, r.amount) for r in rows]


async def paid_by_source(session: AsyncSession, household_code: str) -> dict[str, int]:
    """What each funding source has paid the household (its posted pieces), by source code."""
    lt, fs = ledger_transfers, funding_sources
    rows = await session.execute(
        select(fs.c.code, func.sum(lt.c.amount))
        .join(fs, fs.c.account_id == lt.c.debit_account_id)
        .where(lt.c.household_code == household_code, lt.c.kind == "post_pending")
        .group_by(fs.c.code)
    )
    return {code: int(total) for code, total in rows}
