"""The hash chain: PostgreSQL refuses edits; an edit made behind its back is found and named."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker

from db import audit
from db.schema import audit_chain_heads, audit_log
from tests.conftest import drive_one, enroll, make_households


@pytest.fixture
async def settled(client, sessions, task_queue):
    (h,) = await enroll(client, sessions, task_queue, make_households(1))
    await drive_one(client, sessions, h)
    return h


async def _rows(sessions, code):
    async with sessions() as s:
        query = select(audit_log).where(audit_log.c.household_code == code).order_by(audit_log.c.seq)
        return (await s.execute(query)).mappings().all()


async def test_postgres_refuses_to_edit_or_delete_audit_rows(sessions, owner_sessions, settled):
    """Even the schema owner is refused by the triggers (the application's role has no UPDATE or DELETE at
    all: tests/test_privileges.py)."""
    rows = await _rows(sessions, settled.code)
    async with owner_sessions() as s:
        with pytest.raises(DBAPIError, match="append-only"):
            await s.execute(text("UPDATE audit_log SET reason = 'x' WHERE id = :id"), {"id": rows[2]["id"]})
    async with owner_sessions() as s:
        with pytest.raises(DBAPIError, match="append-only"):
            await s.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": rows[5]["id"]})


async def test_postgres_refuses_a_row_that_does_not_link_to_its_predecessor(sessions, settled):
    last = (await _rows(sessions, settled.code))[-1]
    forged = {k: v for k, v in last.items() if k not in ("id", "recorded_at")}
    forged |= {"seq": 7, "idempotency_key": "forged", "hash": "f" * 64, "prev_hash": "0" * 64}
    async with sessions() as s:
        with pytest.raises(DBAPIError, match="broken at row 7"):
            await s.execute(audit_log.insert().values(**forged))


async def _tamper(sessions, sql: str, params: dict) -> None:
    """What someone with the database owner's rights could do (`sessions` are the owner's): switch the guard
    off and edit. The application's role cannot (tests/test_privileges.py)."""
    async with sessions() as s, s.begin():
        await s.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        await s.execute(text(sql), params)
        await s.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))


async def test_an_edited_row_is_named_by_the_chain_check(sessions, owner_sessions, settled):
    rows = await _rows(sessions, settled.code)
    async with sessions() as s:
        assert (await audit.verify_chain(s, settled.code)).ok
    target = rows[3]  # the allocation: someone changes the amount
    await _tamper(owner_sessions, "UPDATE audit_log SET amount = amount + 1000000 WHERE id = :id", {"id": target["id"]})
    try:
        async with sessions() as s:
            report = await audit.verify_chain(s, settled.code)
        assert not report.ok
        assert (report.first_break.id, report.first_break.seq) == (target["id"], 4)
        assert "edited" in report.first_break.reason
        assert f"id={target['id']}" in str(report.first_break)
    finally:
        await _tamper(
            owner_sessions,
            "UPDATE audit_log SET amount = :a WHERE id = :id",
            {"id": target["id"], "a": target["amount"]},
        )
    async with sessions() as s:
        assert (await audit.verify_chain(s, settled.code)).ok


async def test_a_rewritten_row_with_a_fresh_hash_breaks_the_next_link(sessions, owner_sessions, settled):
    rows = await _rows(sessions, settled.code)
    target = rows[1]
    fields = dict(target) | {"actor_user_id": "tinh.luong"}
    new_hash = audit.row_hash(target["prev_hash"], fields)
    await _tamper(
        owner_sessions,
        "UPDATE audit_log SET actor_user_id = 'tinh.luong', hash = :h WHERE id = :id",
        {"id": target["id"], "h": new_hash},
    )
    try:
        async with sessions() as s:
            report = await audit.verify_chain(s, settled.code)
        assert report.first_break.seq == 3 and "prev_hash" in report.first_break.reason
    finally:
        await _tamper(
            owner_sessions,
            "UPDATE audit_log SET actor_user_id = :u, hash = :h WHERE id = :id",
            {"id": target["id"], "u": target["actor_user_id"], "h": target["hash"]},
        )


async def test_a_deleted_row_is_named_as_missing(sessions, owner_sessions, settled):
    rows = await _rows(sessions, settled.code)
    victim = rows[3]
    await _tamper(owner_sessions, "DELETE FROM audit_log WHERE id = :id", {"id": victim["id"]})
    try:
        async with sessions() as s:
            report = await audit.verify_chain(s, settled.code)
        assert report.first_break.seq == 5 and "expected seq 4" in report.first_break.reason
    finally:
        async with owner_sessions() as s, s.begin():
            await s.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_link"))
            await s.execute(audit_log.insert().values(**dict(victim)))
            await s.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_link"))
    async with sessions() as s:
        assert (await audit.verify_chain(s, settled.code)).ok


@asynccontextmanager
async def _in_rolled_back(owner_sessions, *statements: tuple[str, dict]):
    """What the owner could do with the guards off (deleting rows the chain check cannot miss), in a
    transaction rolled back at the end; yields sessions that see it."""
    async with owner_sessions.kw["bind"].connect() as conn:
        tx = await conn.begin()
        try:
            await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            for sql, params in statements:
                await conn.execute(text(sql), params)
            yield async_sessionmaker(bind=conn, expire_on_commit=False, join_transaction_mode="create_savepoint")
        finally:
            await tx.rollback()


async def test_a_cut_tail_and_a_removed_chain_are_named_by_the_chain_check(
    sessions, owner_sessions, client, task_queue
):
    """What is left of a chain whose last rows were deleted still numbers from 1 and links; a household whose
    every row was deleted has no chain to walk. The head recorded as each row was written names both."""
    a, b = await enroll(client, sessions, task_queue, make_households(2))
    for h in (a, b):
        await drive_one(client, sessions, h)
    rows = await _rows(sessions, a.code)
    assert len(rows) == 14
    async with sessions() as s:
        heads = {
            r.household_code: r
            for r in await s.execute(
                select(audit_chain_heads).where(audit_chain_heads.c.household_code.in_([a.code, b.code]))
            )
        }
        assert (await audit.verify_chain(s, a.code)).ok
    assert (heads[a.code].seq, heads[a.code].hash.strip()) == (14, rows[-1]["hash"].strip())

    cut = ("DELETE FROM audit_log WHERE household_code = :c AND seq > 10", {"c": a.code})
    gone = ("DELETE FROM audit_log WHERE household_code = :c", {"c": b.code})
    async with _in_rolled_back(owner_sessions, cut, gone) as bound, bound() as s:
        tail = await audit.verify_chain(s, a.code)
        assert tail.rows == 10 and not tail.ok
        assert (tail.first_break.household_code, tail.first_break.seq) == (a.code, 10)
        assert "ends at row 10, but its head was recorded at row 14" in tail.first_break.reason
        whole = await audit.verify_chain(s, b.code)
        assert whole.rows == 0 and not whole.ok
        assert (whole.first_break.id, whole.first_break.household_code) == (0, b.code)
        assert "the whole chain was removed" in whole.first_break.reason
        every = await audit.verify_chain(s)  # the whole province's check names the removed chain first
        assert every.first_break.household_code == b.code
    async with sessions() as s:  # rolled back: both whole again
        assert (await audit.verify_chain(s, a.code)).ok and (await audit.verify_chain(s, b.code)).ok


async def test_the_heads_move_only_forward_and_only_by_the_trigger(sessions, owner_sessions, settled):
    async with sessions() as s:  # the application's login may read them, not write them
        with pytest.raises(DBAPIError, match="permission denied"):
            await s.execute(text("UPDATE audit_chain_heads SET seq = 1 WHERE household_code = :c"), {"c": settled.code})
    async with sessions() as s:
        with pytest.raises(DBAPIError, match="permission denied"):
            await s.execute(text("DELETE FROM audit_chain_heads WHERE household_code = :c"), {"c": settled.code})
    async with owner_sessions() as s:  # the owner, with the guards on: never back, never away
        with pytest.raises(DBAPIError, match="one row forward at a time"):
            await s.execute(text("UPDATE audit_chain_heads SET seq = 3 WHERE household_code = :c"), {"c": settled.code})
    async with owner_sessions() as s:
        with pytest.raises(DBAPIError, match="append-only"):
            await s.execute(text("DELETE FROM audit_chain_heads WHERE household_code = :c"), {"c": settled.code})
