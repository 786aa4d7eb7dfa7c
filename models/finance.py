"""Money in tranches: the plan, the pieces reserved from each source, payouts and the payment channel.

A household's entitlement is reserved at fund allocation as pending ledger transfers, one per (tranche,
source) piece. A tranche is paid when the payment channel confirms it: its pieces are posted. Cancellation
voids the pieces not yet paid. Amounts are whole đồng.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.actions import Evidenced, EvidenceRef, StepInput
from models.actor import Actor
from models.assertion import ActionAssertion
from models.household import BeneficiaryGroup, Stage, SupportType


class Milestone(StrEnum):
    """What makes a tranche due."""

    FOUNDATION = "foundation"  # new build: the foundation is done
    PROGRESS_30 = "progress_30"  # repair: 30% of the work is done
    ACCEPTANCE = "acceptance"  # the house is accepted (nghiệm thu)


# Milestones the commune reports during construction; acceptance is the accept step itself.
REPORTED_MILESTONES = frozenset({Milestone.FOUNDATION, Milestone.PROGRESS_30})


class TrancheSpec(BaseModel):
    """One tranche of a plan: a share of the entitlement, due at a milestone."""

    model_config = ConfigDict(frozen=True)

    percent: int = Field(gt=0, le=100)
    milestone: Milestone


class TranchePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    tranches: list[TrancheSpec] = Field(min_length=1)
    legal_basis: str = ""

    def amounts(self, entitlement: int) -> list[int]:
        """Whole-đồng amounts; the last tranche takes the remainder, so they add up to the entitlement."""
        if sum(t.percent for t in self.tranches) != 100:
            raise ValueError("tranche percentages must add up to 100")
        out = [entitlement * t.percent // 100 for t in self.tranches[:-1]]
        return [*out, entitlement - sum(out)]


class TrancheStatus(StrEnum):
    PLANNED = "planned"  # waiting for its milestone
    DUE = "due"  # milestone reached (or payment returned to Finance): Finance may authorise
    AUTHORISED = "authorised"  # the paying unit may release
    RELEASED = "released"  # sent to the payment channel, waiting for its confirmation
    PAID = "paid"  # confirmed by the channel; its pieces are posted
    VOIDED = "voided"  # cancelled or sent back before payment; its pieces went back to their sources


class Piece(BaseModel):
    """A pending ledger transfer: part of one tranche, drawn from one source."""

    model_config = ConfigDict(frozen=True)

    transfer_id: int
    source: str
    amount: int = Field(gt=0)


class TrancheState(BaseModel):
    model_config = ConfigDict(frozen=True)

    n: int = Field(ge=1)
    percent: int
    milestone: Milestone
    amount: int
    status: TrancheStatus = TrancheStatus.PLANNED
    pieces: list[Piece] = Field(default_factory=list)
    authorised_by: str | None = None
    released_by: str | None = None
    attempts: int = 0  # payment instructions sent for this tranche
    payment_id: str | None = None  # the instruction in flight, or the one that was confirmed
    released_at: datetime | None = None
    escalations: int = 0  # times the channel's silence on the instruction in flight was escalated
    inquiries: int = 0  # scheduled status inquiries made about the instruction in flight


class AllocationPiece(BaseModel):
    """What the allocation activity reserved, tranche by tranche."""

    model_config = ConfigDict(frozen=True)

    tranche: int
    percent: int
    milestone: Milestone
    amount: int
    pieces: list[Piece]


# ------------------------------------------------------------------ payout updates


class ReportProgressInput(StepInput):
    """The commune reports a construction milestone; the tranche it triggers becomes due."""

    blank_evidence_recorded = True  # refused since the payout inputs share the lifecycle's check

    milestone: Milestone


class PayoutInput(StepInput):
    """A step on one tranche: Finance authorises it, the paying unit releases it."""

    blank_evidence_recorded = True  # refused since the payout inputs share the lifecycle's check

    tranche: int = Field(ge=1)
    batch_id: str | None = None  # set when the step is one household of a bulk batch
    # A batch's step carries the batch as its officer signed it (its assertion inside) instead of its own.
    batch: PayoutBatchInput | None = None

    @property
    def signed_as(self) -> StepInput | PayoutBatchInput:
        """What the step's assertion covers: the batch, for a batch's step; else the step's own input."""
        return self.batch if self.batch is not None else self


class AuthorisePayoutInput(PayoutInput):
    """Finance authorises a due tranche (approve → authorise → release)."""


class ReleasePayoutInput(PayoutInput):
    """The paying unit releases an authorised tranche to the payment channel; never its authoriser."""


# An officer's step on a tranche: what the payout updates take.
PayoutStepInput = ReportProgressInput | AuthorisePayoutInput | ReleasePayoutInput


class PayoutResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    household_code: str
    step: str
    tranche: int
    amount: int
    status: TrancheStatus
    seq: int
    audit_hash: str
    payment_id: str | None = None


# ------------------------------------------------------------------ payment channel


class PaymentInstruction(BaseModel):
    """What the paying unit sends to the bank or treasury. `payment_id` is the end-to-end id: a channel
    that sees it twice pays once."""

    model_config = ConfigDict(frozen=True)

    payment_id: str
    workflow_id: str
    household_code: str
    tranche: int
    attempt: int
    amount: int = Field(gt=0)
    payee: str  # the account holder (the head of household)
    released_by: str


ChannelState = Literal["pending", "confirmed", "failed", "unknown"]


class ChannelStatus(BaseModel):
    """The channel's own answer for one instruction; 'unknown' means it never received it."""

    model_config = ConfigDict(frozen=True)

    payment_id: str
    state: ChannelState
    bank_ref: str | None = None
    reason: str | None = None
    # The terms the channel holds for the id: the engine compares them with what it sent before it records
    # an answer (None from a channel that does not say).
    amount: int | None = None
    payee: str | None = None
    tranche: int | None = None
    attempt: int | None = None
    # A final answer is signed by the channel (its assertion: step `payment_<state>`, the instruction's
    # workflow, the channel's system user), over `answer`: the JSON it sent, kept exactly as received, so the
    # recording activity and the auditors verify the very bytes the channel signed. None in older histories.
    assertion: ActionAssertion | None = None
    answer: dict[str, Any] | None = None

    @classmethod
    def of_answer(cls, answer: dict[str, Any], assertion: ActionAssertion | None) -> ChannelStatus:
        """The status the channel's signed JSON says (what it says, never what the caller adds)."""
        fields = {k: answer.get(k) for k in ANSWER_FIELDS if answer.get(k) is not None}
        return cls(**fields, assertion=assertion, answer=answer if assertion else None)


# What a channel's answer says (and signs); the answer's JSON has these keys, each possibly null.
ANSWER_FIELDS = ("payment_id", "state", "amount", "payee", "bank_ref", "reason", "tranche", "attempt")
FINAL_STATES = ("confirmed", "failed")


def answer_step(state: str) -> str:
    """The step a final answer records, which is also the step the channel signs it for."""
    return f"payment_{state}"


def failure_reason(reason: str | None, attempts: int, retry: bool) -> str:
    """What a failed payment's step says: the channel's reason and what the engine does next."""
    then = f"sent again as attempt {attempts + 1}" if retry else "returned to Finance to authorise again"
    return f"{reason or 'failed'} → {then}"


class PaymentNotice(BaseModel):
    """The channel's callback (a signal): only a wake-up. The workflow asks the channel for the status
    before it records anything, so a forged or repeated notice moves no money."""

    model_config = ConfigDict(frozen=True)

    payment_id: str


class PaymentCheck(BaseModel):
    """The authoritative status, with the channel's system user that records it."""

    model_config = ConfigDict(frozen=True)

    status: ChannelStatus
    channel_actor: Actor


class EscalationRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Names the instruction (its id and household); the activity re-reads its terms from PostgreSQL and never
    # sends the amount or payee given here.
    instruction: PaymentInstruction
    overdue_hours: int
    escalation: int  # 1 for the first escalation of this instruction, 2 for the next, ...
    finance_agency: str


class PaymentRequest(BaseModel):
    """Send the instruction for a released tranche. Only its id and household: the activity builds the
    instruction (amount, payee) from PostgreSQL, for a release recorded there. Older histories passed a
    whole PaymentInstruction here: its other fields are ignored."""

    model_config = ConfigDict(frozen=True)

    payment_id: str
    household_code: str
    # The workflow's own copy of the terms (its tranche plan, the household it was started for): PostgreSQL's
    # must agree, so neither a row edited in the database nor a forged request alone changes what is paid.
    # None in histories recorded before this check.
    amount: int | None = None
    payee: str | None = None


class SettleRequest(BaseModel):
    """Ask the channel about one instruction and, for a final answer it signed, record the step
    (payment_confirmed / payment_failed) in the same local activity. What the workflow knows of the tranche."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    household_code: str
    seq: int = Field(ge=1)  # the sequence number the step would take
    stage: Stage
    at: datetime
    tranche: int
    attempts: int  # instructions sent for the tranche so far (the one asked about is the last)
    payment_id: str
    transfer_ids: list[int]  # the tranche's pieces, posted on a confirmation
    retry: bool  # a failure may be sent again (else the tranche goes back to Finance)
    finance_agency: str
    support_type: SupportType
    beneficiary_group: BeneficiaryGroup


# ------------------------------------------------------------------ bulk batches


class BatchAction(StrEnum):
    AUTHORISE = "authorise"
    RELEASE = "release"


class BatchSelection(BaseModel):
    model_config = ConfigDict(frozen=True)

    district: str | None = None
    decision_ref: str | None = None
    codes: list[str] = Field(default_factory=list)

    def describe(self) -> str:
        parts = [
            f"district {self.district}" if self.district else "",
            f"decision {self.decision_ref}" if self.decision_ref else "",
            f"{len(self.codes)} listed households" if self.codes else "",
        ]
        return ", ".join(p for p in parts if p) or "the whole province"


class PayoutBatchInput(Evidenced):
    # Strings as signed (a batch's strings were never stripped); its evidence references are, by the shared check.
    model_config = ConfigDict(frozen=True, str_strip_whitespace=False)
    blank_evidence_recorded = True  # refused since the batch inputs share the lifecycle's check

    batch_id: str
    action: BatchAction
    tranche: int = Field(ge=1)
    selection: BatchSelection
    concurrency: int = Field(default=8, ge=1, le=64)
    # Signed by the front door for the batch's workflow id and step `payout_batch:<action>`; every
    # household's step carries it, and each household checks the batch covers it.
    assertion: ActionAssertion | None = None


class BatchItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    household_code: str
    outcome: Literal["done", "skipped", "failed"]
    rule: str | None = None
    message: str | None = None
    amount: int = 0


class BatchProgress(BaseModel):
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.skipped + self.failed


class PayoutBatchResult(BaseModel):
    batch_id: str
    action: BatchAction
    tranche: int
    progress: BatchProgress
    amount: int
    items: list[BatchItem]


class ApplyPayoutInput(Evidenced):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=False)
    blank_evidence_recorded = True  # refused since the batch inputs share the lifecycle's check

    household_code: str
    action: BatchAction
    tranche: int
    evidence: list[EvidenceRef]  # required here: the batch's, as signed
    batch_id: str
    # The batch as its officer signed it: each household's step carries it (None: a batch started before).
    batch: PayoutBatchInput | None = None


class SelectPayoutsInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    selection: BatchSelection
    tranche: int
    actor: Actor
    # The signed batch: nothing is selected for a batch no officer's front door signed.
    batch: PayoutBatchInput | None = None


class PayoutCandidate(BaseModel):
    """A household of the selection and its tranche's status in the read model (written in the same
    transaction as the step, so a tranche it shows done is done)."""

    model_config = ConfigDict(frozen=True)

    household_code: str
    status: TrancheStatus
