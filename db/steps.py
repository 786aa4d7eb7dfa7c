"""What a step decided, written in one statement: its audit row, the outbox rows that announce it, and the
household's read-model row.

Three tables, one round trip: data-modifying CTEs run in one snapshot and stand or fall together, inside
the step's transaction (the household's row is already locked by it). The audit row's hash is computed
here, chained to `prev_hash`; the database's trigger checks the link.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db import outbox
from db.audit import AuditRow, row_hash
from db.schema import audit_log, households

ASSERTION_ONCE = "audit_log_assertion_once"  # the unique index on (household, assertion's one-time id)


class AssertionReused(Exception):
    """The step's assertion (its one-time id) already took a step of this household."""


async def write(
    session: AsyncSession,
    *,
    prev_hash: str,
    audit: dict[str, Any],
    messages: list[dict[str, Any]],
    register: dict[str, Any],
) -> AuditRow:
    """Append the audit row (`audit`: its fields), enqueue `messages` (`outbox.row`s), and set `register` on
    the household's read-model row. Returns the audit row as written; raises `AssertionReused` when the
    unique index on the assertion's one-time id refuses the row."""
    digest = row_hash(prev_hash, audit)
    entry = insert(audit_log).values(prev_hash=prev_hash, hash=digest, **audit).returning(audit_log.c.id).cte("entry")
    ctes = [
        update(households)
        .where(households.c.code == audit["household_code"])
        .values(updated_at=func.now(), **register)
        .returning(households.c.code)
        .cte("register")
    ]
    if messages:
        ctes.append(outbox.insert_rows(messages).cte("messages"))
    try:
        new_id = await session.scalar(select(entry.c.id).add_cte(*ctes))
    except IntegrityError as err:
        if ASSERTION_ONCE not in str(err.orig):
            raise
        raise AssertionReused(audit["household_code"]) from None
    return AuditRow(
        id=new_id,
        household_code=audit["household_code"],
        seq=audit["seq"],
        idempotency_key=audit["idempotency_key"],
        step=audit["step"],
        actor_user_id=audit["actor_user_id"],
        amount=audit.get("amount"),
        transfer_id=audit.get("transfer_id"),
        hash=digest,
        occurred_at=audit["occurred_at"],
    )
