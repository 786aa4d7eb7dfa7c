"""What the recording activity checks and writes for the steps before the money (models/review.py), inside the
step's transaction, on what PostgreSQL holds rather than on what the workflow remembers:

- a settlement is refused (`GrievanceOpen`) while a payment grievance of the household is not resolved
  (operations/receipts.py);
- an approval is refused (`DoubleSupport`) while the household's keyed CCCD is on another programme's list and
  no override of that match is recorded;
- an override names a match that exists, and is written with its audit row;
- a decision on a change reads the request from its own signed audit row (kind, value, who asked), refuses a
  request decided before or decided by the person who asked, and writes the approved change to the register
  through `household_changes` (migration 0016's triggers hold the same rules).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import Refusal
from db import receipts, registry
from db import review as review_db
from models.household import FUNDED_STAGES, Stage, Step
from models.records import MoneyOp, TransitionRecord


@dataclass(frozen=True)
class Decision:
    request: review_db.RequestedChange
    approved: bool


async def before_writing(session, rec: TransitionRecord, row) -> Decision | None:
    """Refuse what PostgreSQL says may not be recorded; a decision on a change: the request it decides."""
    signed = rec.signed_input or {}
    if rec.step is Step.SETTLE:
        waiting = await receipts.open_payment_grievances(session, rec.household_code)
        if waiting:
            raise Refusal(
                "GrievanceOpen",
                f"household {rec.household_code} has open payment grievance(s) {', '.join(map(str, waiting))}: "
                "settlement waits until they are resolved",
            )
        return None
    if rec.step is Step.APPROVE:
        found = await registry.open_matches(session, rec.household_code)
        if found:
            names = ", ".join(sorted({m.programme for m in found}))
            raise Refusal(
                "DoubleSupport",
                f"household {rec.household_code} is on the beneficiary list of {names}: approval waits until an "
                "authorised officer records why this is not double support ('override_double_support')",
            )
        return None
    if rec.step is not Step.DECIDE_CHANGE:
        return None
    seq = signed.get("change")
    request = await review_db.requested_change(session, rec.household_code, seq) if isinstance(seq, int) else None
    if request is None:
        raise Refusal("UnknownChange", f"household {rec.household_code} has no change requested at step {seq}")
    if await review_db.decided(session, rec.household_code, seq):
        raise Refusal("AlreadyDecided", f"change {seq} of household {rec.household_code} was decided already")
    if request.requested_by == rec.actor.user_id:
        raise Refusal(
            "SegregationOfDuties",
            f"user {rec.actor.user_id} requested change {seq} of household {rec.household_code} and may not "
            "also decide it",
        )
    approved = bool(signed.get("approved", True))
    if approved and request.kind == "payee":  # an instruction sent names the payee its authoriser approved
        await no_payment_in_flight(session, rec.household_code)
    adjusts = approved and request.kind == "support_type" and Stage(row.stage) in FUNDED_STAGES
    if adjusts != (rec.money is MoneyOp.ADJUST):
        raise Refusal(
            "HouseholdMismatch",
            f"the decision on change {seq} of household {rec.household_code} "
            f"{'must' if adjusts else 'may not'} re-reserve its unpaid tranches",
        )
    return Decision(request, approved)


async def after_writing(session, rec: TransitionRecord, row, decision: Decision | None, audit_id: int) -> None:
    """Write what the step's audit row stands for: an override of a match, an approved change."""
    if rec.step is Step.OVERRIDE_DOUBLE_SUPPORT:
        await registry.record_override(
            session,
            household_code=rec.household_code,
            programme=(rec.signed_input or {}).get("programme"),
            audit_id=audit_id,
            user_id=rec.actor.user_id,
            reason=rec.reason or "",
            evidence=list(rec.evidence),
            at=rec.at,
        )
    if decision is not None and decision.approved:
        old = {"support_type": row.support_type, "payee": await review_db.payee(session, rec.household_code)}
        await review_db.apply_change(
            session,
            household_code=rec.household_code,
            request=decision.request,
            decision_audit_id=audit_id,
            approved_by=rec.actor.user_id,
            old_value=old.get(decision.request.kind),
        )


async def no_payment_in_flight(session, household_code: str) -> None:
    busy = await review_db.tranches_in_flight(session, household_code)
    if busy:
        raise Refusal(
            "PaymentInFlight",
            f"household {household_code}: tranche(s) {', '.join(map(str, busy))} are authorised or with the payment "
            "channel",
        )


async def unpaid_pieces(session, household_code: str, ids: list[int]) -> list[review_db.UnpaidPiece]:
    """The ledger's pending pieces among `ids`: the household's, unresolved, of tranches not yet paid; refused
    unless every id the workflow named is one."""
    pieces = await review_db.unpaid_pieces(session, household_code, ids)
    if len(pieces) != len(set(ids)):
        raise Refusal(
            "UnknownReservation",
            f"household {household_code}: the unpaid tranches' pieces the workflow names are not all open in the "
            "ledger",
        )
    return pieces


def rescale(amounts: list[int], total: int) -> list[int]:
    """`amounts` scaled to sum to `total`, in whole đồng (largest remainders get the odd đồng, earliest first)."""
    whole = sum(amounts)
    if whole <= 0:
        raise ValueError("nothing to rescale")
    exact = [a * total for a in amounts]
    out = [e // whole for e in exact]
    short = total - sum(out)
    order = sorted(range(len(amounts)), key=lambda i: (-(exact[i] % whole), i))
    for i in order[:short]:
        out[i] += 1
    return out
