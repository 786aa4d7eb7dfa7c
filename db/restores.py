"""Marks of the steps re-recorded from the histories after a database restore (migration 0006): the audit
rows they annotate stay as the engine writes them; this table says which were written again, by whom, when,
why and from which history. Append-only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Integer, Table, Text, insert, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import audit_log, metadata

restored_steps = Table(
    "restored_steps",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("household_code", Text, ForeignKey("households.code")),
    Column("seq", Integer),
    Column("idempotency_key", Text),
    Column("step", Text),
    Column("audit_id", BigInteger, ForeignKey("audit_log.id")),
    Column("audit_hash", Text),
    Column("history_hash", Text),
    Column("workflow_id", Text),
    Column("run_id", Text),
    Column("history_event_id", BigInteger),
    Column("transfer_ids", JSONB),
    Column("restored_by", Text, ForeignKey("users.user_id")),
    Column("reason", Text),
    Column("restored_at", DateTime(timezone=True)),
)


async def current_ids(session: AsyncSession, household_code: str, ids: list[int]) -> list[int]:
    """The transfer ids a workflow names, as the ledger holds them: a step re-recorded after a restore may
    have had to give an allocation's piece a new id (the old one taken meanwhile); the workflow, which
    remembers the history's id, is answered with the new one. Usually no mark: one indexed look-up."""
    moved = (
        await session.scalars(
            select(restored_steps.c.transfer_ids).where(
                restored_steps.c.household_code == household_code, restored_steps.c.transfer_ids != {}
            )
        )
    ).all()
    mapping = {int(k): v for m in moved for k, v in m.items()}
    return [mapping.get(i, i) for i in ids]


async def marks(session: AsyncSession, codes: list[str] | None = None) -> list[dict]:
    """Every restore mark (of these households, when given)."""
    q = select(restored_steps)
    if codes is not None:
        q = q.where(restored_steps.c.household_code.in_(codes))
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def household_rows(session: AsyncSession, code: str) -> tuple[list[Any], dict[int, Any]]:
    """The household's audit rows in seq order, and its restore marks by seq."""
    rows = (
        await session.execute(select(audit_log).where(audit_log.c.household_code == code).order_by(audit_log.c.seq))
    ).all()
    marks = {
        m.seq: m for m in await session.execute(select(restored_steps).where(restored_steps.c.household_code == code))
    }
    return rows, marks


async def mark(session: AsyncSession, **values: Any) -> None:
    """Append one restore mark (the columns of `restored_steps`)."""
    await session.execute(insert(restored_steps).values(**values))
