"""The workflow's input, result and queryable state."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from models.eligibility import EligibilityFindings
from models.finance import TrancheState
from models.household import Household, Stage, Step
from models.policy import WorkflowPolicy
from models.review import ChangeRequest, Objection, Posting


class HouseholdWorkflowInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    household: Household
    policy: WorkflowPolicy
    # Who imported the household's list (import_batches.imported_by): the policy may forbid them some steps.
    # None in workflows started before it was passed.
    imported_by: str | None = None


class TimelineEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int
    step: Step
    from_stage: Stage
    to_stage: Stage
    at: datetime
    user_id: str
    role: str
    agency: str
    evidence: list[str] = Field(default_factory=list)
    reason: str | None = None
    amount: int | None = None
    audit_hash: str
    tranche: int | None = None


class HouseholdState(BaseModel):
    household_code: str
    stage: Stage
    stage_since: datetime
    policy_version: str
    posting_days: int | None = None  # the policy's posting period (None: approval needs no posting)
    imported_by: str | None = None  # who imported the household's list (segregation of duties)
    entitlement: int = 0
    reserved: int = 0
    paid: int = 0
    reservation_id: int | None = None
    funding_source: str | None = None
    tranches: list[TrancheState] = Field(default_factory=list)  # empty for households allocated before tranches
    payment_escalations: int = 0
    reminders_sent: int = 0
    timeline: list[TimelineEntry] = Field(default_factory=list)
    # Before the money (models/review.py): what verification found, the posting of the list, the objections raised
    # while it was posted, the other programmes whose match was overridden, the changes asked for.
    findings: EligibilityFindings | None = None
    posting: Posting | None = None
    objections: list[Objection] = Field(default_factory=list)
    overridden: list[str] = Field(default_factory=list)
    changes: list[ChangeRequest] = Field(default_factory=list)
    payee: str | None = None  # None: the head of household


class HouseholdWorkflowResult(BaseModel):
    household_code: str
    stage: Stage
    paid: int
    steps: int
