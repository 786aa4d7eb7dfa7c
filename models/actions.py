"""One input and one result model per workflow update (each lifecycle step)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from temporalio import workflow

from models.actor import Actor
from models.assertion import ActionAssertion
from models.eligibility import EligibilityFindings
from models.household import Stage, Step
from models.policy import WorkflowPolicy

EvidenceRef = str  # a document reference: minutes, decision, photo file name with its hash, ...


def _made_new(info: ValidationInfo) -> bool:
    """Whether an input is being made for a new step: built in code (`Model(...)`) by a front door or an
    activity, outside a workflow. Everything else is read back from where it was signed or recorded: what a
    workflow decodes (an update's input was signed by a front door that made it new; a start input or a
    replayed one was recorded already, and refusing it would wedge the workflow), an activity's input, and
    what a reader validates with the context `{"recorded": True}` (the auditors, a signed input from an audit
    row)."""
    if isinstance(info.context, dict) and info.context.get("recorded"):
        return False
    return info.mode == "python" and not workflow.in_workflow()


class Evidenced(BaseModel):
    """Who acts and on what evidence: what every step's input has, a batch's included. A blank evidence
    reference is refused."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    # Inputs whose model did not refuse blank references before (payouts, batches): one recorded with a blank
    # reference is read back as it was (`_made_new` is false) instead of being refused on replay.
    blank_evidence_recorded: ClassVar[bool] = False

    actor: Actor
    evidence: list[EvidenceRef] = Field(default_factory=list)

    @field_validator("evidence")
    @classmethod
    def _no_blank_evidence(cls, v: list[str], info: ValidationInfo) -> list[str]:
        # The references stay as given: a model that strips its strings has stripped them already, and one that
        # does not (a batch's input) keeps them as its officer signed them, so its digest does not change.
        if any(not e.strip() for e in v) and not (cls.blank_evidence_recorded and not _made_new(info)):
            raise ValueError("evidence references may not be blank")
        return v


class StepInput(Evidenced):
    """An officer's step on one household: a lifecycle step (`ActionInput`) or a payout step
    (models/finance.py)."""

    # Signed by the front door that authenticated the actor (models/assertion.py); the engine refuses a step
    # without one. None only in histories recorded before signed actions.
    assertion: ActionAssertion | None = None


class ActionInput(StepInput):
    """A lifecycle step: with a reason (required to send back or cancel)."""

    reason: str | None = Field(default=None, max_length=2000)


class ActionResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    household_code: str
    step: Step
    from_stage: Stage
    to_stage: Stage
    seq: int
    at: datetime
    audit_hash: str


class VerifyInput(ActionInput):
    """Commune review (rà soát, bình xét, thẩm định): evidence is the review minutes; `findings`, what the review
    found (models/eligibility.py), required and checked against the criteria when the household's policy has them."""

    findings: EligibilityFindings | None = None


class VerifyResult(ActionResult):
    pass


class ApproveInput(ActionInput):
    """Approval of the household on the list (phê duyệt danh sách): evidence is the decision."""


class ApproveResult(ActionResult):
    pass


class AllocateInput(ActionInput):
    """Finance reserves the household's entitlement from one funding source."""

    # None: the allocation policy picks the sources and splits across them; a code: this source alone.
    source: str | None = Field(default=None, min_length=2, max_length=40)


class AllocateResult(ActionResult):
    source: str  # the sources drawn on, joined with '+'
    amount: int
    transfer_id: int  # the first pending transfer


class CompleteConstructionInput(ActionInput):
    """The commune reports the house built; evidence is the completion report."""


class CompleteConstructionResult(ActionResult):
    pass


class AcceptInput(ActionInput):
    """Acceptance (nghiệm thu) against the '3 cứng' standard; evidence is the signed minutes."""


class AcceptResult(ActionResult):
    pass


class SettleInput(ActionInput):
    """Final settlement (quyết toán): closes the file once every tranche is paid (households allocated
    before tranches: the whole reservation is posted now)."""


class SettleResult(ActionResult):
    amount: int  # paid in all (tranches), or posted at settlement (households allocated before tranches)
    transfer_id: int | None = None


class SendBackInput(ActionInput):
    """Return the file to the previous stage for revision; a reason is required."""


class SendBackResult(ActionResult):
    released: int = 0


class CancelInput(ActionInput):
    """The household is no longer eligible; any reservation is voided. A reason is required."""


class CancelResult(ActionResult):
    released: int = 0


class SetPolicyInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    actor: Actor
    policy: WorkflowPolicy
    assertion: ActionAssertion | None = None


class SetPolicyResult(BaseModel):
    previous_version: str
    version: str
