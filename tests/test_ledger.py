"""The ledger's rules hold in PostgreSQL itself, under concurrency, and after a batch of households."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from core.errors import Refusal
from db import ledger
from db.schema import ledger_accounts, ledger_transfers
from models.household import Step
from operations import reports, sample
from tests.conftest import drive_all, enroll, make_households, take_step


async def _source(sessions, code: str, budget: int) -> dict[str, int]:
    async with sessions() as s, s.begin():
        await ledger.create_source(s, code=code, name=code, category="provincial_budget", is_state_budget=True)
        await ledger.receive(s, key=f"{code}:budget", source=code, amount=budget, memo="t")
        await s.execute(insert(ledger_accounts).values(code=f"HH:{code}-X", name="x", kind="household"))
    async with sessions() as s:
        ids = dict(
            (
                await s.execute(
                    select(ledger_accounts.c.code, ledger_accounts.c.id).where(
                        ledger_accounts.c.code.in_([f"SRC:{code}", f"HH:{code}-X"])
                    )
                )
            ).all()
        )
    return {"src": ids[f"SRC:{code}"], "hh": ids[f"HH:{code}-X"]}


async def _raw_transfer(sessions, **values):
    async with sessions() as s, s.begin():
        return await s.scalar(insert(ledger_transfers).values(**values).returning(ledger_transfers.c.id))


async def test_postgres_refuses_unbalanced_or_non_positive_transfers(scratch):
    acc = await _source(scratch, "PG-RULES", 1_000)
    with pytest.raises(IntegrityError, match="amount"):
        await _raw_transfer(
            scratch,
            idempotency_key="r1",
            kind="pending",
            debit_account_id=acc["src"],
            credit_account_id=acc["hh"],
            amount=0,
        )
    with pytest.raises(IntegrityError, match="two_accounts"):
        await _raw_transfer(
            scratch,
            idempotency_key="r2",
            kind="pending",
            debit_account_id=acc["src"],
            credit_account_id=acc["src"],
            amount=10,
        )


async def test_postgres_refuses_to_overdraw_a_source_even_when_the_application_does_not_check(scratch):
    acc = await _source(scratch, "PG-OVERDRAW", 1_000)
    with pytest.raises(IntegrityError, match="no_overdraw"):
        await _raw_transfer(
            scratch,
            idempotency_key="o1",
            kind="pending",
            debit_account_id=acc["src"],
            credit_account_id=acc["hh"],
            amount=1_001,
        )
    pending = await _raw_transfer(
        scratch,
        idempotency_key="o2",
        kind="pending",
        debit_account_id=acc["src"],
        credit_account_id=acc["hh"],
        amount=1_000,
    )
    assert pending


async def test_a_reservation_is_resolved_once_and_only_on_its_own_accounts(scratch):
    acc = await _source(scratch, "PG-RESOLVE", 1_000)
    pending = await _raw_transfer(
        scratch,
        idempotency_key="p1",
        kind="pending",
        debit_account_id=acc["src"],
        credit_account_id=acc["hh"],
        amount=400,
    )
    with pytest.raises(DBAPIError, match="exceeds pending"):
        await _raw_transfer(
            scratch,
            idempotency_key="p2",
            kind="post_pending",
            pending_id=pending,
            debit_account_id=acc["src"],
            credit_account_id=acc["hh"],
            amount=401,
        )
    await _raw_transfer(
        scratch,
        idempotency_key="p3",
        kind="post_pending",
        pending_id=pending,
        debit_account_id=acc["src"],
        credit_account_id=acc["hh"],
        amount=400,
    )
    with pytest.raises(IntegrityError, match="one_resolution"):
        await _raw_transfer(
            scratch,
            idempotency_key="p4",
            kind="void_pending",
            pending_id=pending,
            debit_account_id=acc["src"],
            credit_account_id=acc["hh"],
            amount=400,
        )
    async with scratch() as s:
        src = (await s.execute(select(ledger_accounts).where(ledger_accounts.c.id == acc["src"]))).mappings().one()
    assert (src["debits_pending"], src["debits_posted"], src["credits_posted"]) == (0, 400, 1_000)


async def test_transfers_are_append_only(scratch, scratch_owner):
    """Even for the schema owner (the application's role has no UPDATE or DELETE: tests/test_privileges.py)."""
    acc = await _source(scratch, "PG-APPEND", 1_000)
    tid = await _raw_transfer(
        scratch,
        idempotency_key="a1",
        kind="pending",
        debit_account_id=acc["src"],
        credit_account_id=acc["hh"],
        amount=10,
    )
    async with scratch_owner() as s:
        with pytest.raises(DBAPIError, match="append-only"):
            await s.execute(update(ledger_transfers).where(ledger_transfers.c.id == tid).values(amount=1))
    async with scratch_owner() as s:
        with pytest.raises(DBAPIError, match="append-only"):
            await s.execute(text("DELETE FROM ledger_transfers WHERE id = :id"), {"id": tid})


async def test_concurrent_reservations_never_overcommit_a_source(scratch):
    await _source(scratch, "RACE", 3 * 60_000_000 + 59_999_999)

    async def attempt(i: int) -> bool:
        async with scratch() as s, s.begin():
            try:
                await ledger.reserve(
                    s, key=f"race-{i}", source="RACE", household_code=None, amount=60_000_000, memo="race"
                )
                return True
            except Refusal as err:
                assert err.rule == "InsufficientFunds"
                return False

    results = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert sum(results) == 3
    async with scratch() as s:
        (bal,) = [b for b in await ledger.source_balances(s) if b.code == "RACE"]
    assert (bal.reserved, bal.free) == (180_000_000, 59_999_999)


async def test_ledger_invariants_hold_after_a_batch_with_cancellations(client, sessions, task_queue):
    items = await enroll(client, sessions, task_queue, make_households(14))
    to_cancel = items[:2]
    for h in to_cancel:
        commune, district = sample.commune_user(h.district, h.commune), sample.district_user(h.district)
        await take_step(client, sessions, h.code, Step.VERIFY, commune, evidence=["BB"])
        await take_step(client, sessions, h.code, Step.APPROVE, district, evidence=["QĐ"])
        await take_step(client, sessions, h.code, Step.ALLOCATE, "tc.hoang", evidence=["PB"], source="NS-TINH")
        await take_step(client, sessions, h.code, Step.CANCEL, district, reason="không còn đủ điều kiện")
    result = await drive_all(client, sessions, items[2:], concurrency=8)
    assert (result.closed, result.failures) == (12, {})

    async with sessions() as s:
        assert await ledger.check_invariants(s) == []
        assert await reports.reconcile_households(s) == []
        for b in await ledger.source_balances(s):
            assert b.free >= 0
        codes = [h.code for h in items]
        posted = dict(
            (
                await s.execute(
                    select(ledger_accounts.c.code, ledger_accounts.c.credits_posted).where(
                        ledger_accounts.c.code.in_([f"HH:{c}" for c in codes])
                    )
                )
            ).all()
        )
        open_pending = await s.scalar(
            select(func.coalesce(func.sum(ledger_accounts.c.credits_pending), 0)).where(
                ledger_accounts.c.code.in_([f"HH:{c}" for c in codes])
            )
        )
    expected = {f"HH:{h.code}": (60_000_000 if h.support_type.value == "new_build" else 30_000_000) for h in items[2:]}
    assert {k: v for k, v in posted.items() if k in expected} == expected
    assert all(posted[f"HH:{h.code}"] == 0 for h in to_cancel)
    assert open_pending == 0


async def test_invariant_check_notices_a_total_that_drifted_from_its_transfers(scratch, scratch_owner):
    acc = await _source(scratch, "DRIFT", 1_000)
    async with scratch_owner() as s, s.begin():  # only the owner can write a balance by hand
        await s.execute(update(ledger_accounts).where(ledger_accounts.c.id == acc["src"]).values(credits_posted=999))
        problems = await ledger.check_invariants(s)
        await s.rollback()
    assert any("SRC:DRIFT" in p and "differ from transfers" in p for p in problems)
