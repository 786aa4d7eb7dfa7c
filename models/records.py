"""What the workflow hands to its activities, and what they hand back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.actor import Actor
from models.assertion import ActionAssertion
from models.finance import AllocationPiece, ChannelStatus
from models.household import BeneficiaryGroup, Stage, Step, SupportType
from models.policy import WorkflowPolicy


class MoneyOp(StrEnum):
    NONE = "none"
    RESERVE = "reserve"  # pending transfer source → household
    POST = "post"  # the pending transfer becomes final
    VOID = "void"  # the pending transfer is released back to the source
    # A change of support type: the tranches not yet paid are voided and reserved again for the new entitlement.
    ADJUST = "adjust"


def money_effect(
    op: MoneyOp,
    *,
    amount: int | None,
    source: str | None,
    reserved_before: int,
    paid_before: int,
    released: int | None = None,
    entitlement: int | None = None,
) -> dict[str, object]:
    """What a money operation does to a household's money fields. The one definition, applied to the
    workflow's state and to the read model alike. `amount` is what the ledger moved: the whole
    reservation, a tranche posted, or what a void released; an adjustment: what it reserved again, having
    `released` what the unpaid tranches held, for the new `entitlement`."""
    moved = amount or 0
    if op is MoneyOp.ADJUST:
        return {"entitlement": entitlement or 0, "reserved": max(reserved_before - (released or 0), 0) + moved}
    if op is MoneyOp.RESERVE:
        return {"entitlement": moved, "reserved": moved, "funding_source": source}
    if op is MoneyOp.POST:
        return {"reserved": max(reserved_before - moved, 0), "paid": paid_before + moved}
    if op is MoneyOp.VOID:
        left = max(reserved_before - moved, 0)
        return {"reserved": left} | ({"funding_source": None} if paid_before == 0 and left == 0 else {})
    return {}


@dataclass(frozen=True)
class MoneyPlan:
    """The money operation a lifecycle step makes, as the workflow plans it before recording the step."""

    op: MoneyOp = MoneyOp.NONE
    reservation_id: int | None = None  # POST / VOID of the single reservation (households allocated before tranches)
    transfer_ids: list[int] = field(default_factory=list)  # VOID: the open tranches' pieces
    tranche_updates: dict[int, str] = field(default_factory=dict)  # tranche → its new status


class TransitionRecord(BaseModel):
    """Everything one transition writes, in one transaction, under one idempotency key."""

    model_config = ConfigDict(frozen=True)

    idempotency_key: str
    workflow_id: str
    household_code: str
    seq: int = Field(ge=1)
    step: Step
    from_stage: Stage
    to_stage: Stage
    at: datetime
    actor: Actor
    evidence: list[str] = Field(default_factory=list)
    reason: str | None = None
    money: MoneyOp = MoneyOp.NONE
    source: str | None = None  # RESERVE: the funding source to draw on
    reservation_id: int | None = None  # POST / VOID of a single reservation (households allocated before tranches)
    transfer_ids: list[int] = Field(default_factory=list)  # POST / VOID: the tranche pieces
    plan_tranches: bool = False  # RESERVE: split by the allocation policy and the tranche plan
    tranche: int | None = None  # the tranche a payout step or a payment concerns
    tranche_updates: dict[int, str] = Field(default_factory=dict)  # tranche → its new status, for the read model
    payment_id: str | None = None
    milestone: str | None = None
    support_type: SupportType
    beneficiary_group: BeneficiaryGroup
    next_agency: str | None = None  # who must act next, to be notified
    # The step's signed assertion and the input it covers (models/assertion.py); the activity verifies them
    # again and keeps both in the audit row. None only for steps recorded before signed actions.
    assertion: ActionAssertion | None = None
    signed_input: dict[str, Any] | None = None
    # The policy version the household ran under when the step was taken (a policy change: the one it
    # replaces, whose admin roles decide). None in steps recorded before signed actions.
    policy_version: str | None = None
    # The payout batch a step is one household of. Its reason still says "batch <id>" (the audit row hashes the
    # reason, and the timeline shows it), so old and new steps read the same. None in steps recorded before it.
    batch_id: str | None = None
    # A move (a reorganisation): the commune it moves to and the policy version it runs under from then on; the
    # recording activity checks both against the gazetteer and the policy table before it writes.
    moved_to: str | None = None
    moved_policy: str | None = None


class TransitionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    audit_id: int
    audit_hash: str
    transfer_id: int | None = None
    amount: int | None = None
    replayed: bool = False  # True when the key had been recorded before: nothing was written
    allocation: list[AllocationPiece] = Field(default_factory=list)  # RESERVE with tranches: what was reserved
    # A move: the policy the household runs under from now on, as the policy table holds it, and the units it is
    # in, as the register holds them (a retry: what the first attempt recorded).
    policy: WorkflowPolicy | None = None
    moved_to: str | None = None
    moved_district: str | None = None
    sources: str | None = None  # RESERVE: the sources drawn on, as the read model shows them
    # A change of support type (MoneyOp.ADJUST): what the unpaid tranches released, and the new entitlement; the
    # tranches reserved again are in `allocation`.
    released: int | None = None
    entitlement: int | None = None
    # When the step was recorded: the record's own time, or on a retry the time the first attempt committed
    # (a worker that crashed after the commit retries with a later workflow.now()). None in older histories.
    at: datetime | None = None
    # A local activity's marker holds its result, not its input: the record comes back with the outcome so
    # the history alone still says who took which step (auditor/history.py reads it from there).
    record: TransitionRecord | None = None


class ReminderRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    idempotency_key: str
    household_code: str
    stage: Stage
    agency: str
    entered_at: datetime
    at: datetime
    overdue_days: int


class SettledAnswer(BaseModel):
    """What `settle_answer` hands back: the channel's answer and, when it was final and recorded, the step's
    outcome (its record inside, as record_transition's local answer carries it: the history alone says who
    recorded what)."""

    model_config = ConfigDict(frozen=True)

    status: ChannelStatus
    outcome: TransitionOutcome | None = None
