"""The archive's table of closed runs' histories (`workflow_histories`, append-only, its SHA-256 checked by
PostgreSQL). Rows go in and come out as mappings; archive/store.py gives them their meaning (what a witness
signature verifies, which run is the latest). Functions flush, never commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import workflow_histories as wh

_PARTICULARS = [c for c in wh.c if c.name != "history"]


async def insert(session: AsyncSession, row: Mapping[str, Any]) -> bool:
    """Store one run's copy; False when the same run with the same signature is already there."""
    stmt = pg_insert(wh).values(**row).on_conflict_do_nothing(index_elements=["run_id", "signature"])
    return (await session.execute(stmt)).rowcount == 1


async def any_signed(session: AsyncSession) -> bool:
    """Whether any row carries a witness signature."""
    return await session.scalar(select(wh.c.seq).where(wh.c.signature != "").limit(1)) is not None


async def particulars(
    session: AsyncSession,
    *,
    workflow_id: str | None = None,
    run_ids: Sequence[str] | None = None,
    workflow_type: str | None = None,
    up_to: int | None = None,
) -> list[dict[str, Any]]:
    """Rows without their history bytes, in archive order, filtered by what is given."""
    q = select(*_PARTICULARS).order_by(wh.c.seq)
    if workflow_id is not None:
        q = q.where(wh.c.workflow_id == workflow_id)
    if run_ids is not None:
        q = q.where(wh.c.run_id.in_(list(run_ids)))
    if workflow_type is not None:
        q = q.where(wh.c.workflow_type == workflow_type)
    if up_to is not None:
        q = q.where(wh.c.seq <= up_to)
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def history_bytes(session: AsyncSession, seq: int) -> bytes:
    """The history (binary protobuf) of the row at `seq`."""
    return bytes(await session.scalar(select(wh.c.history).where(wh.c.seq == seq)))
