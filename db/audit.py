"""The append-only audit log: one hash chain per household.

A row's hash covers every field an auditor relies on plus the hash of the row before it, so editing,
removing or reordering a row breaks the chain from that row on. PostgreSQL refuses UPDATE and DELETE and
checks each new row's link; `verify_chain` recomputes every hash and names the first broken row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import audit_chain_heads, audit_log

GENESIS = "0" * 64
HASHED_FIELDS = (
    "household_code",
    "seq",
    "idempotency_key",
    "step",
    "from_stage",
    "to_stage",
    "actor_user_id",
    "actor_role",
    "actor_agency",
    "evidence",
    "reason",
    "amount",
    "transfer_id",
    "occurred_at",
)
# A signed step's assertion and the input it covers (models/assertion.py): hashed when the row has them, so
# rows written before signed actions hash exactly as they did.
SIGNED_FIELDS = ("assertion", "signed_input")


@dataclass(frozen=True)
class AuditRow:
    id: int
    household_code: str
    seq: int
    idempotency_key: str
    step: str
    actor_user_id: str
    amount: int | None
    transfer_id: int | None
    hash: str
    occurred_at: datetime


@dataclass(frozen=True)
class ChainBreak:
    id: int
    household_code: str
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"audit row id={self.id} (household {self.household_code}, seq {self.seq}): {self.reason}"


@dataclass(frozen=True)
class ChainReport:
    rows: int
    households: int
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def row_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    body = {name: canonical(fields[name]) for name in HASHED_FIELDS}
    body |= {name: fields[name] for name in SIGNED_FIELDS if fields.get(name) is not None}
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + payload).encode()).hexdigest()


async def prior_and_link(session: AsyncSession, key: str, household_code: str, seq: int) -> tuple[AuditRow | None, str]:
    """In one query: the row already recorded under `key` (a retry), and the hash the new row at `seq` links
    to (the row before it, or the genesis hash)."""
    rows = (
        await session.execute(
            select(
                audit_log.c.id,
                audit_log.c.household_code,
                audit_log.c.seq,
                audit_log.c.idempotency_key,
                audit_log.c.step,
                audit_log.c.actor_user_id,
                audit_log.c.amount,
                audit_log.c.transfer_id,
                audit_log.c.hash,
                audit_log.c.occurred_at,
            ).where(
                (audit_log.c.idempotency_key == key)
                | ((audit_log.c.household_code == household_code) & (audit_log.c.seq == seq - 1))
            )
        )
    ).all()
    prior = next((AuditRow(**r._mapping) for r in rows if r.idempotency_key == key), None)
    link = next((r.hash for r in rows if r.household_code == household_code and r.seq == seq - 1), GENESIS)
    return prior, link


async def signed_before(session: AsyncSession, household_code: str, seq: int) -> bool:
    """Whether a step of the household before `seq` carries a signed assertion."""
    found = await session.scalar(
        select(audit_log.c.id)
        .where(audit_log.c.household_code == household_code, audit_log.c.seq < seq, audit_log.c.assertion.is_not(None))
        .limit(1)
    )
    return found is not None


class ChainWalk:
    """Checks rows in (household, seq) order, one at a time: each chain must number its rows from 1 without
    gaps, link each row to the hash of the one before, and hash to its own content. `see` returns the first
    break of a chain (later rows of a broken chain are not judged again)."""

    def __init__(self) -> None:
        self.rows = self.households = 0
        self._current: str | None = None
        self._prev_hash = GENESIS
        self._expected_seq = 1
        self._broken = False

    def see(self, row: Mapping[str, Any]) -> ChainBreak | None:
        self.rows += 1
        if row["household_code"] != self._current:
            self._current, self._prev_hash, self._expected_seq, self._broken = row["household_code"], GENESIS, 1, False
            self.households += 1
        if self._broken:
            return None
        reason = None
        if row["seq"] != self._expected_seq:
            reason = f"expected seq {self._expected_seq}, found {row['seq']} (a row is missing)"
        elif row["prev_hash"] != self._prev_hash:
            reason = "prev_hash does not match the hash of the row before it"
        elif row_hash(row["prev_hash"], row) != row["hash"]:
            reason = "content does not match its hash (the row was edited)"
        if reason:
            self._broken = True
            return ChainBreak(row["id"], row["household_code"], row["seq"], reason)
        self._prev_hash = row["hash"]
        self._expected_seq += 1
        return None


async def verify_chain(session: AsyncSession, household_code: str | None = None) -> ChainReport:
    """Recompute every hash and link, and compare each chain's last row with the head recorded as it was
    written (`audit_chain_heads`), so that a cut tail or a chain removed whole is a break too. Reports the
    broken row with the lowest id (0 for a chain with no row left), if any."""
    query = select(audit_log).order_by(audit_log.c.household_code, audit_log.c.seq)
    heads_q = select(audit_chain_heads)
    if household_code is not None:
        query = query.where(audit_log.c.household_code == household_code)
        heads_q = heads_q.where(audit_chain_heads.c.household_code == household_code)
    heads = {r.household_code: r for r in await session.execute(heads_q)}
    walk = ChainWalk()
    breaks: list[ChainBreak] = []
    last: dict[str, Mapping[str, Any]] = {}
    result = await session.stream(query.execution_options(yield_per=2000))
    async for row in result.mappings():
        if (found := walk.see(row)) is not None:
            breaks.append(found)
        last[row["household_code"]] = {"id": row["id"], "seq": row["seq"], "hash": row["hash"]}
    breaks += head_breaks(heads, last)
    first = min(breaks, key=lambda b: b.id) if breaks else None
    return ChainReport(rows=walk.rows, households=walk.households, first_break=first)


def head_breaks(heads: Mapping[str, Any], last: Mapping[str, Mapping[str, Any]]) -> list[ChainBreak]:
    """Chains whose last row is not the head recorded for them: cut (rows deleted from the end), removed
    whole, or with a last row rewritten."""
    found = []
    for code, head in heads.items():
        row = last.get(code)
        if row is None:
            found.append(
                ChainBreak(
                    0,
                    code,
                    head.seq,
                    f"no row is left, but the chain's head was recorded at row {head.seq}: the whole chain was removed",
                )
            )
        elif row["seq"] < head.seq:
            found.append(
                ChainBreak(
                    row["id"],
                    code,
                    row["seq"],
                    f"the chain ends at row {row['seq']}, but its head "
                    f"was recorded at row {head.seq}: its last rows were cut",
                )
            )
        elif row["seq"] > head.seq:
            found.append(
                ChainBreak(
                    row["id"],
                    code,
                    row["seq"],
                    f"the chain runs to row {row['seq']}, past its head"
                    f" at row {head.seq}: rows were added with the head's trigger off",
                )
            )
        elif row["hash"].strip() != head.hash.strip():
            found.append(
                ChainBreak(
                    row["id"],
                    code,
                    row["seq"],
                    "the last row's hash is not the head recorded when it was written (the row was rewritten)",
                )
            )
    return found


async def rows(session: AsyncSession, codes: list[str] | None = None) -> list[dict[str, Any]]:
    """Every audit row (of these households, when given), by household and seq."""
    q = select(audit_log).order_by(audit_log.c.household_code, audit_log.c.seq)
    if codes is not None:
        q = q.where(audit_log.c.household_code.in_(codes))
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def signed_input_of(session: AsyncSession, audit_id: int) -> dict[str, Any] | None:
    """The input a recorded step's assertion covers."""
    return await session.scalar(select(audit_log.c.signed_input).where(audit_log.c.id == audit_id))


async def row_by_id(session: AsyncSession, audit_id: int) -> Mapping[str, Any]:
    """The audit row with this id (every column)."""
    return (await session.execute(select(audit_log).where(audit_log.c.id == audit_id))).one()._mapping
