"""The witness's queries (archive/witness.py): the audit chains' heads it signs, and its checkpoints
(`witness_checkpoints`, append-only) — the newest, one's hash, all of them in seq order, a new one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy import Integer, Text, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, distinct_on
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import audit_log
from db.schema import witness_checkpoints as wc


class CheckpointTaken(Exception):
    """Another writer stored a checkpoint with this seq first."""


async def chain_heads(session: AsyncSession) -> list[tuple[str, int, str, int]]:
    """(household, seq, hash, number of audit rows in all) of each household's last audit row, in one query."""
    q = (
        select(audit_log.c.household_code, audit_log.c.seq, audit_log.c.hash, func.count().over().label("rows"))
        .ext(distinct_on(audit_log.c.household_code))
        .order_by(audit_log.c.household_code, audit_log.c.seq.desc())
    )
    return [tuple(r) for r in await session.execute(q)]


async def heads_at(session: AsyncSession, heads: Mapping[str, int]) -> dict[str, str]:
    """The hash of each household's audit row at the seq given (households without that row left out)."""
    codes = sorted(heads)
    q = text(
        "SELECT a.household_code, a.seq, a.hash FROM audit_log a "
        "JOIN unnest(:codes, :seqs) AS h(code, seq) ON a.household_code = h.code AND a.seq = h.seq"
    ).bindparams(bindparam("codes", type_=ARRAY(Text)), bindparam("seqs", type_=ARRAY(Integer)))
    rows = await session.execute(q, {"codes": codes, "seqs": [int(heads[c]) for c in codes]})
    return {code: head.strip() for code, _, head in rows}


async def any_audit_row(session: AsyncSession) -> bool:
    return await session.scalar(select(audit_log.c.id).limit(1)) is not None


async def latest(session: AsyncSession) -> Mapping[str, Any] | None:
    """The checkpoint with the highest seq (every column), or None."""
    return (await session.execute(select(wc).order_by(wc.c.seq.desc()).limit(1))).mappings().first()


async def hash_of(session: AsyncSession, seq: int) -> str | None:
    """The stored hash of checkpoint `seq` (as stored), or None."""
    return await session.scalar(select(wc.c.hash).where(wc.c.seq == seq))


async def checkpoints(
    session: AsyncSession, *, up_to: int | None = None, after: int | None = None, yield_per: int = 50
) -> AsyncIterator[Mapping[str, Any]]:
    """The checkpoints (every column) in seq order, above `after` and up to `up_to` when given, streamed."""
    q = select(wc).order_by(wc.c.seq)
    if up_to is not None:
        q = q.where(wc.c.seq <= up_to)
    if after is not None:
        q = q.where(wc.c.seq > after)
    result = await session.stream(q.execution_options(yield_per=yield_per))
    async for row in result.mappings():
        yield row


async def insert(session: AsyncSession, row: Mapping[str, Any]) -> None:
    """Store a checkpoint; `CheckpointTaken` when its seq is already stored."""
    try:
        await session.execute(wc.insert().values(**row))
    except IntegrityError:
        raise CheckpointTaken(row["seq"]) from None
