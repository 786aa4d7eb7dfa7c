"""What the workflow hands to its activities, and what they hand back."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from models.actor import Actor
from models.household import BeneficiaryGroup, Stage, Step, SupportType


class MoneyOp(StrEnum):
    NONE = "none"
    RESERVE = "reserve"  # pending transfer source → household
    POST = "post"  # the pending transfer becomes final
    VOID = "void"  # the pending transfer is released back to the source


def money_effect(
    op: MoneyOp, *, amount: int | None, transfer_id: int | None, source: str | None, paid_before: int
) -> dict[str, object]:
    """What a money operation does to a household's money fields. The one definition, applied to the
    workflow's state and to the read model alike."""
    if op is MoneyOp.RESERVE:
        return {"entitlement": amount, "reserved": amount, "reservation_id": transfer_id, "funding_source": source}
    if op is MoneyOp.POST:
        return {"reserved": 0, "paid": paid_before + (amount or 0), "reservation_id": None}
    if op is MoneyOp.VOID:
        return {"reserved": 0, "reservation_id": None, "funding_source": None}
    return {}


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
    reservation_id: int | None = None  # POST / VOID: the pending transfer
    support_type: SupportType
    beneficiary_group: BeneficiaryGroup
    next_agency: str | None = None  # who must act next, to be notified


class TransitionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    audit_id: int
    audit_hash: str
    transfer_id: int | None = None
    amount: int | None = None
    replayed: bool = False  # True when the key had been recorded before: nothing was written


class ReminderRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    idempotency_key: str
    household_code: str
    stage: Stage
    agency: str
    entered_at: datetime
    at: datetime
    overdue_days: int
