"""The append-only audit log: one hash chain per household.

A row's hash covers every field an auditor relies on plus the hash of the row before it, so editing,
removing or reordering a row breaks the chain from that row on. PostgreSQL refuses UPDATE and DELETE and
checks each new row's link; `verify_chain` recomputes every hash and names the first broken row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import audit_log

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


def row_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    body = {name: canonical(fields[name]) for name in HASHED_FIELDS}
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
            ).where(
                (audit_log.c.idempotency_key == key)
                | ((audit_log.c.household_code == household_code) & (audit_log.c.seq == seq - 1))
            )
        )
    ).all()
    prior = next((AuditRow(**r._mapping) for r in rows if r.idempotency_key == key), None)
    link = next((r.hash for r in rows if r.household_code == household_code and r.seq == seq - 1), GENESIS)
    return prior, link


async def append(session: AsyncSession, *, prev_hash: str, **fields: Any) -> AuditRow:
    digest = row_hash(prev_hash, fields)
    new_id = await session.scalar(
        insert(audit_log).values(prev_hash=prev_hash, hash=digest, **fields).returning(audit_log.c.id)
    )
    return AuditRow(
        id=new_id,
        household_code=fields["household_code"],
        seq=fields["seq"],
        idempotency_key=fields["idempotency_key"],
        step=fields["step"],
        actor_user_id=fields["actor_user_id"],
        amount=fields.get("amount"),
        transfer_id=fields.get("transfer_id"),
        hash=digest,
    )


async def verify_chain(session: AsyncSession, household_code: str | None = None) -> ChainReport:
    """Recompute every hash and link. Reports the broken row with the lowest id, if any."""
    query = select(audit_log).order_by(audit_log.c.household_code, audit_log.c.seq)
    if household_code is not None:
        query = query.where(audit_log.c.household_code == household_code)
    breaks: list[ChainBreak] = []
    rows = households = 0
    current: str | None = None
    prev_hash = GENESIS
    expected_seq = 1
    broken = False
    result = await session.stream(query.execution_options(yield_per=2000))
    async for row in result.mappings():
        rows += 1
        if row["household_code"] != current:
            current, prev_hash, expected_seq, broken = row["household_code"], GENESIS, 1, False
            households += 1
        if broken:
            continue  # the first break of a chain is the one to report
        reason = None
        if row["seq"] != expected_seq:
            reason = f"expected seq {expected_seq}, found {row['seq']} (a row is missing)"
        elif row["prev_hash"] != prev_hash:
            reason = "prev_hash does not match the hash of the row before it"
        elif row_hash(row["prev_hash"], dict(row)) != row["hash"]:
            reason = "content does not match its hash (the row was edited)"
        if reason:
            breaks.append(ChainBreak(row["id"], row["household_code"], row["seq"], reason))
            broken = True
            continue
        prev_hash = row["hash"]
        expected_seq += 1
    first = min(breaks, key=lambda b: b.id) if breaks else None
    return ChainReport(rows=rows, households=households, first_break=first)
