"""Double-entry, two-phase ledger (reserve → post / void), after TigerBeetle's model.

Every transfer moves one positive amount from a debit account to a credit account, so it balances by
construction. Account totals are maintained by a PostgreSQL trigger from the transfers; the rules that
no funding source goes below zero and that a pending transfer is resolved once live in PostgreSQL too.
This module checks the same rules first, so a refusal reads as a sentence rather than a constraint name.

Chart of accounts:
  ORIGIN:<src>  where a source's money comes from (central budget, donors); debited when budget arrives
  SRC:<src>     a funding source: credited by receipts, debited by reservations; never overdrawn
  HH:<code>     a household's entitlement: credited when its reservation is posted (paid)
A handover (2025 reform) moves a district-held source's free money to its successor's source: SRC → SRC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import Row, func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Refusal
from db.schema import funding_sources, ledger_accounts, ledger_transfers


@dataclass(frozen=True)
class Account:
    id: int
    code: str
    kind: str
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int

    @property
    def free(self) -> int:
        """What a funding source can still reserve."""
        return self.credits_posted - self.debits_posted - self.debits_pending


@dataclass(frozen=True)
class Transfer:
    id: int
    idempotency_key: str
    kind: str
    debit_account_id: int
    credit_account_id: int
    amount: int
    pending_id: int | None
    household_code: str | None
    code: str | None
    tranche: int | None


@dataclass(frozen=True)
class SourceBalance:
    code: str
    name: str
    category: str
    is_state_budget: bool
    received: int
    reserved: int
    posted: int

    @property
    def free(self) -> int:
        return self.received - self.reserved - self.posted


_ACCOUNT_COLUMNS = (
    ledger_accounts.c.id,
    ledger_accounts.c.code,
    ledger_accounts.c.kind,
    ledger_accounts.c.debits_pending,
    ledger_accounts.c.debits_posted,
    ledger_accounts.c.credits_pending,
    ledger_accounts.c.credits_posted,
)


async def _account(session: AsyncSession, code: str, *, lock: bool = False) -> Account | None:
    query = select(*_ACCOUNT_COLUMNS).where(ledger_accounts.c.code == code)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).one_or_none()
    return Account(**row._mapping) if row else None


async def _ensure_account(session: AsyncSession, code: str, name: str, kind: str, **flags: bool) -> int:
    """The account's id, creating it if new: one round trip on the usual path (a household's first reservation)."""
    new_id = await session.scalar(
        pg_insert(ledger_accounts)
        .values(code=code, name=name, kind=kind, **flags)
        .on_conflict_do_nothing(index_elements=["code"])
        .returning(ledger_accounts.c.id)
    )
    if new_id is not None:
        return new_id
    return await session.scalar(select(ledger_accounts.c.id).where(ledger_accounts.c.code == code))


async def create_source(
    session: AsyncSession,
    *,
    code: str,
    name: str,
    category: str,
    is_state_budget: bool,
    rules: dict | None = None,
    priority: int = 100,
) -> bool:
    """Register a funding source, or update the name, rules and priority of an existing one (its
    category and budget status never change: they decide how its money was reported). True if new."""
    existing = (
        await session.execute(
            select(funding_sources.c.category, funding_sources.c.is_state_budget).where(funding_sources.c.code == code)
        )
    ).one_or_none()
    if existing is not None:
        if (existing.category, existing.is_state_budget) != (category, is_state_budget):
            raise Refusal(
                "SourceConflict",
                f"funding source {code} is {existing.category} (state budget: {existing.is_state_budget}); "
                "its category cannot change",
            )
        await session.execute(
            funding_sources.update()
            .where(funding_sources.c.code == code)
            .values(name=name, rules=rules or {}, priority=priority)
        )
        return False
    account_id = await _ensure_account(session, f"SRC:{code}", name, "source", debits_must_not_exceed_credits=True)
    origin_id = await _ensure_account(session, f"ORIGIN:{code}", f"{name} (origin)", "origin")
    await session.execute(
        insert(funding_sources).values(
            code=code,
            name=name,
            category=category,
            is_state_budget=is_state_budget,
            account_id=account_id,
            origin_account_id=origin_id,
            rules=rules or {},
            priority=priority,
        )
    )
    return True


_TRANSFER_COLUMNS = tuple(ledger_transfers.c[name] for name in Transfer.__dataclass_fields__)


async def find_transfer(session: AsyncSession, key: str) -> Transfer | None:
    row = (
        await session.execute(select(*_TRANSFER_COLUMNS).where(ledger_transfers.c.idempotency_key == key))
    ).one_or_none()
    return Transfer(**row._mapping) if row else None


# Transfer ids to write, by idempotency key: set only while a step is re-recorded from its history after a
# database restore (auditor/restore.py), so a transfer gets back the id its history names. Empty otherwise.
PINNED_IDS: ContextVar[Mapping[str, int] | None] = ContextVar("ledger_pinned_ids", default=None)


async def _insert_transfer(session: AsyncSession, **values: object) -> Transfer:
    if (pinned := (PINNED_IDS.get() or {}).get(str(values["idempotency_key"]))) is not None:
        values["id"] = pinned
    row = (await session.execute(insert(ledger_transfers).values(**values).returning(*_TRANSFER_COLUMNS))).one()
    return Transfer(**row._mapping)


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise Refusal("InvalidAmount", f"amount must be a positive whole number of đồng, got {amount!r}")


async def _post_between(
    session: AsyncSession, *, key: str, debit: str, credit: str, amount: int, memo: str, code: str, what: str
) -> Transfer:
    """A transfer posted at once, once per key; a debited source may not go below zero."""
    _check_amount(amount)
    if existing := await find_transfer(session, key):
        return existing
    from_account = await _account(session, debit, lock=debit.startswith("SRC:"))
    to_account = await _account(session, credit)
    if from_account is None or to_account is None:
        raise Refusal("UnknownFundingSource", f"{what}: account {debit} or {credit} does not exist")
    if from_account.kind == "source" and from_account.free < amount:
        raise Refusal(
            "InsufficientFunds", f"{what}: {debit} has {from_account.free:,} đồng free, {amount:,} are needed"
        )
    return await _insert_transfer(
        session,
        idempotency_key=key,
        kind="posted",
        debit_account_id=from_account.id,
        credit_account_id=to_account.id,
        amount=amount,
        memo=memo,
        code=code,
    )


async def receive(session: AsyncSession, *, key: str, source: str, amount: int, memo: str) -> Transfer:
    """Budget or donation arriving in a source: ORIGIN:<src> → SRC:<src>, posted at once."""
    return await _post_between(
        session,
        key=key,
        debit=f"ORIGIN:{source}",
        credit=f"SRC:{source}",
        amount=amount,
        memo=memo,
        code="receipt",
        what=f"receipt into {source}",
    )


async def reimburse(
    session: AsyncSession, *, key: str, payer: str, advance_source: str, amount: int, memo: str
) -> Transfer:
    """Cấp bù: the programme source pays back a district's advance, SRC:<payer> → ORIGIN:<advance>
    (to the budget the district advanced from). Posted at once; the payer may not go below zero."""
    return await _post_between(
        session,
        key=key,
        debit=f"SRC:{payer}",
        credit=f"ORIGIN:{advance_source}",
        amount=amount,
        memo=memo,
        code="reimbursement",
        what=f"reimbursement of {advance_source} by {payer}",
    )


async def hand_over(
    session: AsyncSession, *, key: str, source: str, to_source: str, amount: int, memo: str
) -> Transfer:
    """A district-held source's free money handed to its successor's source (biên bản bàn giao):
    SRC:<source> → SRC:<to_source>, posted at once; the source may not go below zero."""
    return await _post_between(
        session,
        key=key,
        debit=f"SRC:{source}",
        credit=f"SRC:{to_source}",
        amount=amount,
        memo=memo,
        code="handover",
        what=f"handover of {source} to {to_source}",
    )


async def reserve(
    session: AsyncSession,
    *,
    key: str,
    source: str,
    household_code: str,
    amount: int,
    memo: str,
    tranche: int | None = None,
) -> Transfer:
    """Pending transfer SRC:<source> → HH:<household>; refused when the source's free balance is short."""
    _check_amount(amount)
    src = await _account(session, f"SRC:{source}", lock=True)  # row lock: concurrent reservations queue here
    if src is None or src.kind != "source":
        raise Refusal("UnknownFundingSource", f"funding source {source!r} does not exist")
    if src.free < amount:
        raise Refusal(
            "InsufficientFunds",
            f"funding source {source} has {src.free:,} đồng free; household {household_code} needs {amount:,}",
        )
    household_account = await _ensure_account(
        session, f"HH:{household_code}", f"Household {household_code}", "household"
    )
    return await _insert_transfer(
        session,
        idempotency_key=key,
        kind="pending",
        debit_account_id=src.id,
        credit_account_id=household_account,
        amount=amount,
        household_code=household_code,
        memo=memo,
        code="allocation",
        tranche=tranche,
    )


async def _resolve(session: AsyncSession, kind: str, *, key: str, pending_id: int, memo: str) -> Transfer:
    pending = (
        await session.execute(
            select(*_TRANSFER_COLUMNS).where(ledger_transfers.c.id == pending_id, ledger_transfers.c.kind == "pending")
        )
    ).one_or_none()
    if pending is None:
        raise Refusal("UnknownReservation", f"transfer {pending_id} is not a pending reservation")
    resolved = await session.scalar(select(ledger_transfers.c.kind).where(ledger_transfers.c.pending_id == pending_id))
    if resolved:
        raise Refusal("ReservationResolved", f"reservation {pending_id} was already {resolved}")
    p = Transfer(**pending._mapping)
    return await _insert_transfer(
        session,
        idempotency_key=key,
        kind=kind,
        debit_account_id=p.debit_account_id,
        credit_account_id=p.credit_account_id,
        amount=p.amount,
        pending_id=p.id,
        household_code=p.household_code,
        memo=memo,
        code="payout" if kind == "post_pending" else "release",
        tranche=p.tranche,
    )


async def post(session: AsyncSession, *, key: str, pending_id: int, memo: str) -> Transfer:
    """The reservation becomes final: the household has been paid its whole reserved amount."""
    return await _resolve(session, "post_pending", key=key, pending_id=pending_id, memo=memo)


async def void(session: AsyncSession, *, key: str, pending_id: int, memo: str) -> Transfer:
    """Release a reservation back to its source."""
    return await _resolve(session, "void_pending", key=key, pending_id=pending_id, memo=memo)


async def source_balances(session: AsyncSession) -> list[SourceBalance]:
    rows = await session.execute(
        select(
            funding_sources.c.code,
            funding_sources.c.name,
            funding_sources.c.category,
            funding_sources.c.is_state_budget,
            ledger_accounts.c.credits_posted.label("received"),
            ledger_accounts.c.debits_pending.label("reserved"),
            ledger_accounts.c.debits_posted.label("posted"),
        )
        .join(ledger_accounts, ledger_accounts.c.id == funding_sources.c.account_id)
        .order_by(funding_sources.c.code)
    )
    return [SourceBalance(**r._mapping) for r in rows]


async def check_invariants(session: AsyncSession) -> list[str]:
    """Recompute every account from the transfers and check the ledger's rules. Empty list: all hold."""
    problems: list[str] = []
    t = ledger_transfers
    # Pending transfers still open = pending minus those resolved by a post or void.
    resolution = t.alias("resolution")
    open_pending = (
        select(t.c.id, t.c.debit_account_id, t.c.credit_account_id, t.c.amount)
        .where(t.c.kind == "pending")
        .where(~select(resolution.c.id).where(resolution.c.pending_id == t.c.id).exists())
        .subquery()
    )
    posted = (
        select(t.c.debit_account_id, t.c.credit_account_id, t.c.amount)
        .where(t.c.kind.in_(("posted", "post_pending")))
        .subquery()
    )

    accounts = (await session.execute(select(*_ACCOUNT_COLUMNS))).all()
    recomputed: dict[int, list[int]] = {a.id: [0, 0, 0, 0] for a in accounts}
    for side, index in (("debit_account_id", 0), ("credit_account_id", 2)):
        for rows, offset in ((open_pending, 0), (posted, 1)):
            col = rows.c[side]
            for account_id, total in await session.execute(
                select(col, func.coalesce(func.sum(rows.c.amount), 0)).group_by(col)
            ):
                recomputed[account_id][index + offset] = int(total)
    for a in accounts:
        stored = [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]
        if stored != recomputed[a.id]:
            problems.append(f"account {a.code}: stored totals {stored} differ from transfers {recomputed[a.id]}")
        if a.kind == "source" and a.debits_pending + a.debits_posted > a.credits_posted:
            problems.append(f"account {a.code} is overdrawn")
    sums = (
        await session.execute(
            select(
                func.coalesce(func.sum(ledger_accounts.c.debits_posted), 0),
                func.coalesce(func.sum(ledger_accounts.c.credits_posted), 0),
                func.coalesce(func.sum(ledger_accounts.c.debits_pending), 0),
                func.coalesce(func.sum(ledger_accounts.c.credits_pending), 0),
            )
        )
    ).one()
    if sums[0] != sums[1] or sums[2] != sums[3]:
        problems.append(
            f"debits and credits do not balance: posted {sums[0]} / {sums[1]}, pending {sums[2]} / {sums[3]}"
        )
    bad = await session.scalar(select(func.count()).select_from(t).where(t.c.amount <= 0)) or 0
    if bad:
        problems.append(f"{bad} transfers with a non-positive amount")
    return problems


async def posted_pieces(session: AsyncSession) -> list[Row]:
    """(household_code, tranche, amount) of every posted pending transfer."""
    t = ledger_transfers.c
    return list(await session.execute(select(t.household_code, t.tranche, t.amount).where(t.kind == "post_pending")))


async def household_transfers(session: AsyncSession, codes: list[str] | None = None) -> list[dict]:
    """Every transfer of a household (of these households, when given), with its accounts' codes
    (`debit_account`, `credit_account`), in the order written."""
    debit, credit = ledger_accounts.alias("debit"), ledger_accounts.alias("credit")
    q = (
        select(ledger_transfers, debit.c.code.label("debit_account"), credit.c.code.label("credit_account"))
        .join(debit, debit.c.id == ledger_transfers.c.debit_account_id)
        .join(credit, credit.c.id == ledger_transfers.c.credit_account_id)
        .where(ledger_transfers.c.household_code.is_not(None))
        .order_by(ledger_transfers.c.id)
    )
    if codes is not None:
        q = q.where(ledger_transfers.c.household_code.in_(codes))
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def first_of_steps(session: AsyncSession, household_code: str, keys: list[str]) -> Row | None:
    """(id, idempotency_key) of a transfer of the household written by one of these steps (its key's
    first part), if any."""
    t = ledger_transfers.c
    return (
        await session.execute(
            select(t.id, t.idempotency_key).where(
                t.household_code == household_code, func.split_part(t.idempotency_key, ":", 1).in_(keys)
            )
        )
    ).first()


async def taken_ids(session: AsyncSession, ids: Iterable[int]) -> set[int]:
    """Which of these transfer ids the ledger holds."""
    return set((await session.execute(select(ledger_transfers.c.id).where(ledger_transfers.c.id.in_(ids)))).scalars())


async def advance_transfer_ids(session: AsyncSession, at_least: int) -> None:
    """Move the transfers' id sequence past `at_least` and every id in the ledger (never back)."""
    await session.execute(
        text(
            "SELECT setval(pg_get_serial_sequence('ledger_transfers', 'id'), GREATEST(:at_least, "
            "(SELECT COALESCE(max(id), 0) FROM ledger_transfers), "
            "(SELECT last_value FROM ledger_transfers_id_seq), 1))"
        ),
        {"at_least": at_least},
    )


async def sum_under(session: AsyncSession, household_code: str, key_prefix: str) -> int:
    """What the household's transfers whose key starts with `key_prefix` moved, in đồng."""
    t = ledger_transfers
    total = await session.scalar(
        select(func.coalesce(func.sum(t.c.amount), 0)).where(
            t.c.household_code == household_code, t.c.idempotency_key.startswith(key_prefix, autoescape=True)
        )
    )
    return int(total)
