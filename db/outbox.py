"""The notification outbox: rows written in the same transaction as the step they announce."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import outbox


@dataclass(frozen=True)
class Message:
    id: int
    idempotency_key: str
    household_code: str | None
    kind: str
    channel: str
    recipient: str
    subject: str
    body: str
    attempts: int


def row(
    *, key: str, household_code: str | None, kind: str, channel: str, recipient: str, subject: str, body: str
) -> dict[str, Any]:
    """A message as its outbox row; written once per key (a retry writes it again as nothing)."""
    return {
        "idempotency_key": key,
        "household_code": household_code,
        "kind": kind,
        "channel": channel,
        "recipient": recipient,
        "subject": subject,
        "body": body,
    }


def insert_rows(rows: list[dict[str, Any]]):
    """The statement that adds `rows`, skipping any whose key is already there; returns the ids written."""
    return (
        pg_insert(outbox).values(rows).on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(outbox.c.id)
    )


async def enqueue(session: AsyncSession, **message: Any) -> bool:
    """Add a message (the arguments of `row`) unless one with this key exists. True when a row was written."""
    new_id = await session.scalar(insert_rows([row(**message)]))
    return new_id is not None


async def backlog(session: AsyncSession) -> dict[str, int]:
    """Messages not sent, by status: `pending` (due now or retrying later, as a failing channel leaves them)
    and `dead` (given up after the last attempt)."""
    rows = await session.execute(
        select(outbox.c.status, func.count()).where(outbox.c.status.in_(("pending", "dead"))).group_by(outbox.c.status)
    )
    return {"pending": 0, "dead": 0} | {status: n for status, n in rows}


async def claim_due(session: AsyncSession, limit: int) -> list[Message]:
    """Due messages, locked for this transaction; other dispatchers skip them."""
    rows = await session.execute(
        select(*(outbox.c[f] for f in Message.__dataclass_fields__))
        .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= func.now())
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [Message(**r._mapping) for r in rows]


async def mark_sent(session: AsyncSession, ids: list[int]) -> None:
    if ids:
        await session.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids))
            .values(status="sent", sent_at=func.now(), attempts=outbox.c.attempts + 1, last_error=None)
        )


async def mark_failed(session: AsyncSession, message: Message, error: str, max_attempts: int) -> None:
    attempts = message.attempts + 1
    # Exponential back-off, capped at an hour; after max_attempts the message waits for a person.
    delay = timedelta(seconds=min(3600, 2**attempts))
    await session.execute(
        update(outbox)
        .where(outbox.c.id == message.id)
        .values(
            attempts=attempts,
            last_error=error[:2000],
            status="dead" if attempts >= max_attempts else "pending",
            next_attempt_at=func.now() + delay,
        )
    )


async def counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
    return {status: n for status, n in rows}
