"""Finance's own operations outside a household's workflow: sources and their budgets, decisions,
reimbursement of district advances (cấp bù) and VBSP loans. Each checks who asks, runs in one
transaction, and is keyed by the caller's reference so that running it twice writes once."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

from core.errors import Refusal
from db import finance as finance_db
from db import ledger, users
from db import policy as policy_db
from db.engine import Sessions
from models.actor import Actor
from models.allocation import SourceRules
from models.policy import WorkflowPolicy

CATEGORIES = ("national_target_programme", "provincial_budget", "storm_relief", "donation", "district_advance")


def parse_dong(text: str) -> int:
    """'1.200.000.000' (as written in Vietnam), '1_200_000_000', '1 200 000 000' or '1200000000' → an int.
    A comma is the Vietnamese decimal mark, and đồng have no fraction: '1.200,5' is refused, not rounded."""
    value = text.strip()
    if not re.fullmatch(r"\d+|\d{1,3}(?:([._ ])\d{3})(?:\1\d{3})*", value):
        raise Refusal("InvalidAmount", f"{text!r} is not a whole number of đồng (thousands may be grouped with '.')")
    return int(re.sub(r"[._ ]", "", value))


async def require_power(session, user_id: str, gate: Callable[[WorkflowPolicy], list[str]], what: str) -> Actor:
    """The registered, active user, if the policy in effect today gives their role this power."""
    actor = await users.require_actor(session, user_id)
    roles = gate(await policy_db.policy_today(session))
    if actor.role not in roles:
        raise Refusal("RoleNotAllowed", f"role {actor.role!r} may not {what} (allowed: {', '.join(sorted(roles))})")
    return actor


async def add_source(
    sessions: Sessions,
    user_id: str,
    *,
    code: str,
    name: str,
    category: str,
    state_budget: bool,
    priority: int = 100,
    rules: dict | None = None,
) -> bool:
    if category not in CATEGORIES:
        raise Refusal("InvalidCategory", f"category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    checked = SourceRules.model_validate(rules or {})  # names the bad rule before anything is written
    async with sessions() as session, session.begin():
        await require_power(session, user_id, lambda p: p.finance_roles, "manage funding sources")
        return await ledger.create_source(
            session,
            code=code,
            name=name,
            category=category,
            is_state_budget=state_budget,
            rules=checked.model_dump(exclude_defaults=True),
            priority=priority,
        )


async def receive(
    sessions: Sessions, user_id: str, *, source: str, amount: int, ref: str
) -> tuple[ledger.Transfer, bool]:
    """Budget or donation arriving in a source, keyed by the document that brought it. Returns the
    transfer and whether it is new (False: that document was recorded before; nothing was written)."""
    key = f"receipt:{source}:{ref}"
    async with sessions() as session, session.begin():
        actor = await require_power(session, user_id, lambda p: p.finance_roles, "record money received")
        if existing := await ledger.find_transfer(session, key):
            return existing, False
        return await ledger.receive(
            session, key=key, source=source, amount=amount, memo=f"{ref} (recorded by {actor.user_id})"
        ), True


async def add_decision(
    sessions: Sessions, user_id: str, ref: str, *, supplements: str | None, decided_on: date | None, note: str | None
) -> bool:
    async with sessions() as session, session.begin():
        await require_power(session, user_id, lambda p: p.decision_roles, "register decisions")
        return await finance_db.add_decision(session, ref, supplements=supplements, decided_on=decided_on, note=note)


async def reimburse(
    sessions: Sessions, user_id: str, *, advance_source: str, ref: str, amount: int | None = None
) -> tuple[ledger.Transfer | None, bool]:
    """Pay back (cấp bù) what a district advanced for programme households, from the source its rules
    name, up to what is outstanding. `amount` None: as much as is outstanding and the payer has free.
    Returns the transfer (None: nothing to pay) and whether it is new (False: `ref` was paid before)."""
    async with sessions() as session, session.begin():
        actor = await require_power(session, user_id, lambda p: p.finance_roles, "reimburse district advances")
        owed = {r.advance_source: r for r in await finance_db.receivables(session)}
        if advance_source not in owed:
            raise Refusal("NotAnAdvance", f"source {advance_source!r} is not a district advance to be reimbursed")
        r = owed[advance_source]
        key = f"reimbursement:{advance_source}:{ref}"
        if existing := await ledger.find_transfer(session, key):
            return existing, False
        if amount is None:
            payer_free = {b.code: b.free for b in await ledger.source_balances(session)}[r.reimbursed_by]
            amount = min(r.outstanding, payer_free)
            if amount <= 0:
                return None, False
        if amount > r.outstanding:
            raise Refusal(
                "OverReimbursement",
                f"{advance_source} is owed {r.outstanding:,} đồng; a reimbursement of {amount:,} would overpay it",
            )
        return await ledger.reimburse(
            session,
            key=key,
            payer=r.reimbursed_by,
            advance_source=advance_source,
            amount=amount,
            memo=f"cấp bù {ref} ({actor.user_id})",
        ), True


async def record_loan(
    sessions: Sessions,
    user_id: str,
    *,
    household_code: str,
    amount: int,
    status: str,
    ref: str,
    note: str | None = None,
) -> bool:
    async with sessions() as session, session.begin():
        actor = await require_power(session, user_id, lambda p: p.loan_roles, "record VBSP loans")
        return await finance_db.record_loan(
            session,
            key=f"loan:{household_code}:{ref}",
            household_code=household_code,
            amount=amount,
            status=status,
            recorded_by=actor.user_id,
            note=note,
        )
