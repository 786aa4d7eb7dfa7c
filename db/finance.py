"""Finance data: source rules and allocation policies, tranche plans and the tranches read model,
payment instructions, decisions, VBSP loans and reimbursements (cấp bù). Functions flush, never commit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import BigInteger, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Refusal
from db.schema import (
    allocation_policies,
    audit_log,
    decisions,
    funding_sources,
    household_loans,
    household_tranches,
    households,
    ledger_accounts,
    ledger_transfers,
    payments,
    payout_batch_runs,
    payout_batch_tickets,
    tranche_plans,
)
from models.allocation import AllocationPolicy, SourceRow, SourceRules
from models.finance import AllocationPiece, PaymentInstruction, Piece, TranchePlan
from models.household import BeneficiaryGroup, SupportType

LOAN_STATUSES = ("approved", "disbursed", "repaying", "repaid", "cancelled")


# ------------------------------------------------------------------ sources and policies


async def source_rows(session: AsyncSession) -> list[SourceRow]:
    """Every funding source with its rules, in account order."""
    rows = await session.execute(
        select(
            funding_sources.c.code,
            funding_sources.c.category,
            funding_sources.c.priority,
            funding_sources.c.rules,
            funding_sources.c.account_id,
        ).order_by(funding_sources.c.account_id)
    )
    return [
        SourceRow(r.code, r.category, r.priority, r.account_id, SourceRules.model_validate(r.rules or {})) for r in rows
    ]


async def lock_free_balances(session: AsyncSession, account_ids: list[int]) -> dict[int, int]:
    """The free balance of each account, read after locking the rows in id order (concurrent allocations
    queue here and never see a stale balance)."""
    if not account_ids:
        return {}
    a = ledger_accounts.c
    rows = await session.execute(
        select(a.id, a.credits_posted, a.debits_posted, a.debits_pending)
        .where(a.id.in_(account_ids))
        .order_by(a.id)
        .with_for_update()
    )
    return {r.id: r.credits_posted - r.debits_posted - r.debits_pending for r in rows}


async def source_rules(session: AsyncSession) -> dict[str, tuple[int, dict]]:
    """Each source's priority and rules, by code."""
    rows = await session.execute(select(funding_sources.c.code, funding_sources.c.priority, funding_sources.c.rules))
    return {r.code: (r.priority, r.rules) for r in rows}


async def allocation_policy(session: AsyncSession, programme: str | None, as_of: date) -> AllocationPolicy:
    """The programme's own policy if it has one, else the default, as in effect on `as_of`."""
    t = allocation_policies
    for name in ([programme] if programme else []) + ["default"]:
        doc = await session.scalar(
            select(t.c.document)
            .where(t.c.programme == name, t.c.effective_from <= as_of)
            .order_by(t.c.effective_from.desc())
            .limit(1)
        )
        if doc is not None:
            return AllocationPolicy.model_validate(doc)
    raise Refusal("NoAllocationPolicy", f"no allocation policy is in effect on {as_of.isoformat()}")


async def put_allocation_policy(session: AsyncSession, policy: AllocationPolicy, effective_from: date) -> None:
    await session.execute(
        pg_insert(allocation_policies)
        .values(
            programme=policy.programme,
            version=policy.version,
            effective_from=effective_from,
            document=policy.model_dump(mode="json"),
        )
        .on_conflict_do_nothing()
    )


async def tranche_plan(
    session: AsyncSession, support_type: SupportType, group: BeneficiaryGroup, as_of: date
) -> TranchePlan:
    """The plan for a support type and group; a group-specific plan wins over the all-groups plan."""
    t = tranche_plans
    row = (
        await session.execute(
            select(t.c.document, t.c.legal_basis)
            .where(t.c.support_type == support_type.value)
            .where((t.c.beneficiary_group == group.value) | t.c.beneficiary_group.is_(None))
            .where(t.c.effective_from <= as_of)
            .order_by(t.c.beneficiary_group.is_(None), t.c.effective_from.desc())
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        raise Refusal(
            "NoTranchePlan", f"no tranche plan for {support_type.value} / {group.value} on {as_of.isoformat()}"
        )
    return TranchePlan(tranches=row.document, legal_basis=row.legal_basis)


async def put_tranche_plan(
    session: AsyncSession,
    support_type: SupportType,
    group: BeneficiaryGroup | None,
    plan: TranchePlan,
    effective_from: date,
) -> None:
    plan.amounts(100)  # refuses percentages that do not add up to 100
    await session.execute(
        pg_insert(tranche_plans)
        .values(
            support_type=support_type.value,
            beneficiary_group=group.value if group else None,
            effective_from=effective_from,
            document=[t.model_dump(mode="json") for t in plan.tranches],
            legal_basis=plan.legal_basis or "-",
        )
        .on_conflict_do_nothing()
    )


# ------------------------------------------------------------------ tranches read model


async def record_allocation(session: AsyncSession, code: str, allocation: list[AllocationPiece]) -> None:
    rows = [
        dict(
            household_code=code,
            tranche=a.tranche,
            percent=a.percent,
            milestone=a.milestone.value,
            amount=a.amount,
            status="planned",
            authorised_by=None,
            released_by=None,
            attempts=0,
        )
        for a in allocation
    ]
    stmt = pg_insert(household_tranches).values(rows)
    # After a send-back and a new allocation the household's tranches start afresh.
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["household_code", "tranche"],
            set_={
                c: stmt.excluded[c]
                for c in ("percent", "milestone", "amount", "status", "authorised_by", "released_by", "attempts")
            }
            | {"updated_at": func.now()},
        )
    )


async def allocation_recorded(session: AsyncSession, code: str, key_prefix: str) -> tuple[list[AllocationPiece], str]:
    """What an allocation recorded under `key_prefix` reserved, tranche by tranche, from the ledger (and
    each tranche's share and milestone from the read model written in the same transaction)."""
    t, fs, ht = ledger_transfers, funding_sources, household_tranches
    rows = (
        await session.execute(
            select(t.c.id, t.c.tranche, t.c.amount, fs.c.code.label("source"))
            .join(fs, fs.c.account_id == t.c.debit_account_id)
            .where(t.c.household_code == code, t.c.idempotency_key.startswith(key_prefix, autoescape=True))
            .order_by(t.c.id)
        )
    ).all()
    specs = {
        r.tranche: r
        for r in await session.execute(
            select(ht.c.tranche, ht.c.percent, ht.c.milestone).where(ht.c.household_code == code)
        )
    }
    allocation = [
        AllocationPiece(
            tranche=n,
            percent=specs[n].percent,
            milestone=specs[n].milestone,
            amount=sum(r.amount for r in rows if r.tranche == n),
            pieces=[Piece(transfer_id=r.id, source=r.source, amount=r.amount) for r in rows if r.tranche == n],
        )
        for n in sorted({r.tranche for r in rows})
    ]
    return allocation, "+".join(dict.fromkeys(r.source for r in rows))


async def update_tranches(
    session: AsyncSession,
    code: str,
    updates: dict[int, str],
    *,
    authorised_by: str | None = None,
    released_by: str | None = None,
) -> None:
    for n, status in updates.items():
        values: dict = {"status": status, "updated_at": func.now()}
        if authorised_by:
            values |= {"authorised_by": authorised_by, "released_by": None}
        if released_by:
            values["released_by"] = released_by
        await session.execute(
            household_tranches.update()
            .where(household_tranches.c.household_code == code, household_tranches.c.tranche == n)
            .values(**values)
        )


@dataclass(frozen=True)
class TrancheRow:
    household_code: str
    tranche: int
    amount: int
    status: str


async def tranches_for_batch(
    session: AsyncSession,
    *,
    tranche: int,
    district: str | None,
    decision_ref: str | None,
    codes: list[str],
    province: str,
) -> list[TrancheRow]:
    t, h = household_tranches, households
    q = (
        select(t.c.household_code, t.c.tranche, t.c.amount, t.c.status)
        .join(h, h.c.code == t.c.household_code)
        .where(t.c.tranche == tranche, h.c.province == province)
        .order_by(t.c.household_code)
    )
    if district:
        q = q.where(h.c.district == district)
    if decision_ref:
        q = q.where(h.c.decision_ref == decision_ref)
    if codes:
        q = q.where(t.c.household_code.in_(codes))
    return [TrancheRow(**r._mapping) for r in await session.execute(q)]


# ------------------------------------------------------------------ payments


async def save_instruction(session: AsyncSession, instr: PaymentInstruction, channel: str) -> bool:
    """Record a payment instruction once (by its end-to-end id), and count it on its tranche. True if new."""
    new = await session.scalar(
        pg_insert(payments)
        .values(
            payment_id=instr.payment_id,
            household_code=instr.household_code,
            tranche=instr.tranche,
            attempt=instr.attempt,
            amount=instr.amount,
            payee=instr.payee,
            channel=channel,
            status="sent",
            released_by=instr.released_by,
        )
        .on_conflict_do_nothing(index_elements=["payment_id"])
        .returning(payments.c.payment_id)
    )
    await session.execute(
        household_tranches.update()
        .where(
            household_tranches.c.household_code == instr.household_code,
            household_tranches.c.tranche == instr.tranche,
            household_tranches.c.attempts < instr.attempt,
        )
        .values(attempts=instr.attempt, updated_at=func.now())
    )
    return new is not None


PAYMENT_ID = re.compile(r"^(?P<code>.+)-A(?P<allocation>\d+)-T(?P<tranche>\d+)-(?P<attempt>\d+)$")


async def released_instruction(session: AsyncSession, payment_id: str, household_code: str) -> PaymentInstruction:
    """The instruction for `payment_id` as PostgreSQL has it: only for a tranche whose release is recorded (its
    read-model row released, by someone), of the household's current allocation, and for the attempt now due
    (one more than the failures recorded for it); amount from the tranche, payee from the registered household.
    Anything else is refused (`NoRecordedRelease`): nobody can have the engine send what was not released."""
    m = PAYMENT_ID.match(payment_id)
    if m is None or m["code"] != household_code:
        raise Refusal("NoRecordedRelease", f"{payment_id!r} is not a payment id of household {household_code}")
    n, attempt, allocation = int(m["tranche"]), int(m["attempt"]), int(m["allocation"])
    ht, h = household_tranches, households
    row = (
        await session.execute(
            select(
                ht.c.amount,
                ht.c.status,
                ht.c.released_by,
                # The payee a change approved names, else the head of household (both written only by triggers'
                # leave: at import, or by an approved change request).
                func.coalesce(h.c.payee, h.c.head_of_household).label("head_of_household"),
                h.c.workflow_id,
            )
            .join(h, h.c.code == ht.c.household_code)
            .where(ht.c.household_code == household_code, ht.c.tranche == n)
        )
    ).one_or_none()
    if row is None or row.status != "released" or not row.released_by:
        raise Refusal(
            "NoRecordedRelease",
            f"tranche {n} of household {household_code} has no recorded release "
            f"({row.status if row else 'no such tranche'}): {payment_id} is not sent",
        )
    allocations = await session.scalar(
        select(func.count()).where(audit_log.c.household_code == household_code, audit_log.c.step == "allocate")
    )
    prefix = f"{household_code}-A{allocation}-T{n}-"
    failed = await session.scalar(
        select(func.count()).where(
            payments.c.household_code == household_code,
            payments.c.tranche == n,
            payments.c.status == "failed",
            payments.c.payment_id.startswith(prefix, autoescape=True),
        )
    )
    if allocation != allocations or attempt != failed + 1:
        raise Refusal(
            "NoRecordedRelease",
            f"{payment_id} is not the instruction due for tranche {n} of household "
            f"{household_code} (allocation {allocations}, attempt {failed + 1})",
        )
    # The read model's amount must be what the ledger (append-only) holds reserved for this tranche and not
    # yet resolved: a row edited to pay more (or less) than was reserved is refused, not sent.
    lt = ledger_transfers
    resolved = select(lt.c.pending_id).where(lt.c.pending_id.is_not(None), lt.c.household_code == household_code)
    reserved = await session.scalar(
        select(func.coalesce(func.sum(lt.c.amount), 0).cast(BigInteger)).where(
            lt.c.household_code == household_code, lt.c.tranche == n, lt.c.kind == "pending", lt.c.id.not_in(resolved)
        )
    )
    if reserved != row.amount:
        raise Refusal(
            "InstructionMismatch",
            f"tranche {n} of household {household_code} reads "
            f"{row.amount:,} đồng, but the ledger holds {reserved:,} reserved for it: {payment_id} "
            "is not sent",
        )
    return PaymentInstruction(
        payment_id=payment_id,
        workflow_id=row.workflow_id or f"household-{household_code}",
        household_code=household_code,
        tranche=n,
        attempt=attempt,
        amount=row.amount,
        payee=row.head_of_household,
        released_by=row.released_by,
    )


async def instruction_terms(session: AsyncSession, payment_id: str) -> tuple[int, str] | None:
    """(amount, payee) of the instruction the engine sent under this id."""
    row = (
        await session.execute(select(payments.c.amount, payments.c.payee).where(payments.c.payment_id == payment_id))
    ).one_or_none()
    return (row.amount, row.payee) if row else None


async def resolve_payment(
    session: AsyncSession, payment_id: str, status: str, *, bank_ref: str | None, reason: str | None, at: datetime
) -> None:
    await session.execute(
        payments.update()
        .where(payments.c.payment_id == payment_id, payments.c.status == "sent")
        .values(status=status, bank_ref=bank_ref, reason=reason, resolved_at=at)
    )


async def mark_overdue(session: AsyncSession, payment_id: str) -> None:
    await session.execute(
        payments.update().where(payments.c.payment_id == payment_id, payments.c.status == "sent").values(overdue=True)
    )


# ------------------------------------------------------------------ decisions


async def ensure_decisions(session: AsyncSession, refs: set[str]) -> None:
    """Decisions named by an imported list are registered as original unless registered before."""
    if refs:
        await session.execute(
            pg_insert(decisions).values([{"ref": r, "kind": "original"} for r in sorted(refs)]).on_conflict_do_nothing()
        )


async def add_decision(
    session: AsyncSession, ref: str, *, supplements: str | None, decided_on: date | None, note: str | None
) -> bool:
    """Register a decision; a supplementary one names the decision whose list it amends. True if new."""
    if supplements and not await session.scalar(select(decisions.c.ref).where(decisions.c.ref == supplements)):
        raise Refusal("UnknownDecision", f"decision {supplements!r} is not registered; register it first")
    existing = (await session.execute(select(decisions).where(decisions.c.ref == ref))).mappings().one_or_none()
    if existing is not None:
        if existing["supplements"] != supplements:
            raise Refusal(
                "DecisionConflict",
                f"decision {ref} is registered as {existing['kind']}"
                + (f" to {existing['supplements']}" if existing["supplements"] else ""),
            )
        return False
    await session.execute(
        decisions.insert().values(
            ref=ref,
            kind="supplementary" if supplements else "original",
            supplements=supplements,
            decided_on=decided_on,
            note=note,
        )
    )
    return True


# ------------------------------------------------------------------ VBSP loans


async def record_loan(
    session: AsyncSession,
    *,
    key: str,
    household_code: str,
    amount: int,
    status: str,
    recorded_by: str,
    lender: str = "VBSP",
    note: str | None = None,
) -> bool:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise Refusal("InvalidAmount", f"loan amount must be a positive whole number of đồng, got {amount!r}")
    if status not in LOAN_STATUSES:
        raise Refusal("InvalidLoanStatus", f"loan status must be one of {', '.join(LOAN_STATUSES)}, got {status!r}")
    if not await session.scalar(select(households.c.code).where(households.c.code == household_code)):
        raise Refusal("UnknownHousehold", f"household {household_code} is not registered")
    new = await session.scalar(
        pg_insert(household_loans)
        .values(
            idempotency_key=key,
            household_code=household_code,
            lender=lender,
            amount=amount,
            status=status,
            recorded_by=recorded_by,
            note=note,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(household_loans.c.id)
    )
    return new is not None


def current_loans():
    """Each household's loan as its latest event says (amount and status), as a subquery."""
    t = household_loans
    latest = select(func.max(t.c.id)).group_by(t.c.household_code, t.c.lender).scalar_subquery()
    return select(t.c.household_code, t.c.lender, t.c.amount, t.c.status).where(t.c.id.in_(latest)).subquery()


# ------------------------------------------------------------------ reimbursement (cấp bù)


@dataclass(frozen=True)
class Receivable:
    advance_source: str
    districts: str
    reimbursed_by: str
    advanced: int  # paid to households out of the district's advance
    reimbursed: int
    outstanding: int


async def receivables(session: AsyncSession) -> list[Receivable]:
    """What each district advanced for programme households and what has been paid back: sums of
    ledger entries (payouts from the advance source, reimbursements to its origin)."""
    out = []
    rows = (
        await session.execute(
            select(
                funding_sources.c.code,
                funding_sources.c.rules,
                funding_sources.c.account_id,
                funding_sources.c.origin_account_id,
            ).order_by(funding_sources.c.code)
        )
    ).all()
    t = ledger_transfers
    for r in rows:
        rules = SourceRules.model_validate(r.rules or {})
        if not rules.reimbursed_by:
            continue
        advanced = await session.scalar(
            select(func.coalesce(func.sum(t.c.amount), 0)).where(
                t.c.debit_account_id == r.account_id, t.c.kind == "post_pending"
            )
        )
        reimbursed = await session.scalar(
            select(func.coalesce(func.sum(t.c.amount), 0)).where(
                t.c.credit_account_id == r.origin_account_id, t.c.code == "reimbursement"
            )
        )
        out.append(
            Receivable(
                r.code,
                ", ".join(rules.districts) or "-",
                rules.reimbursed_by,
                int(advanced),
                int(reimbursed),
                int(advanced) - int(reimbursed),
            )
        )
    return out


async def claim_batch_run(
    session: AsyncSession, *, nonce: str, batch_id: str, workflow_id: str, run_id: str, signed_by: str
) -> str:
    """Record that `run_id` took the signed batch with this one-time id, unless a run took it before; returns
    the run that holds it (the primary key on the nonce decides a race)."""
    await session.execute(
        pg_insert(payout_batch_runs)
        .values(nonce=nonce, batch_id=batch_id, workflow_id=workflow_id, run_id=run_id, signed_by=signed_by)
        .on_conflict_do_nothing(index_elements=["nonce"])
    )
    return await batch_run(session, nonce) or run_id


async def batch_run(session: AsyncSession, nonce: str) -> str | None:
    """The run that claimed the signed batch with this one-time id (`payout_batch_runs`), if any."""
    return await session.scalar(select(payout_batch_runs.c.run_id).where(payout_batch_runs.c.nonce == nonce))


async def issue_batch_ticket(
    session: AsyncSession, *, nonce: str, household_code: str, tranche: int, action: str, run_id: str
) -> None:
    """Let the batch's run take its step on this household (once: a second ticket is not needed)."""
    await session.execute(
        pg_insert(payout_batch_tickets)
        .values(nonce=nonce, household_code=household_code, tranche=tranche, action=action, run_id=run_id)
        .on_conflict_do_nothing(index_elements=["nonce", "household_code"])
    )


async def has_batch_ticket(session: AsyncSession, nonce: str, household_code: str, tranche: int, action: str) -> bool:
    t = payout_batch_tickets.c
    found = await session.scalar(
        select(t.nonce).where(
            t.nonce == nonce, t.household_code == household_code, t.tranche == tranche, t.action == action
        )
    )
    return found is not None


async def payment_recorded(session: AsyncSession, payment_id: str) -> bool:
    """Whether the payment's instruction has its row."""
    return bool(await session.scalar(select(payments.c.payment_id).where(payments.c.payment_id == payment_id)))
