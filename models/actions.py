"""One input and one result model per workflow update (each lifecycle step)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.actor import Actor
from models.assertion import ActionAssertion
from models.household import Stage, Step
from models.policy import WorkflowPolicy

EvidenceRef = str  # a document reference: minutes, decision, photo file name with its hash, ...


class ActionInput(BaseModel):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    actor: Actor
    evidence: list[EvidenceRef] = Field(default_factory=list)
    reason: str | None = Field(default=None, max_length=2000)
    # Signed by the front door that authenticated the actor (models/assertion.py); the engine refuses a step
    # without one. None only in histories recorded before signed actions.
    assertion: ActionAssertion | None = None

    @field_validator("evidence")
    @classmethod
    def _no_blank_evidence(cls, v: list[str]) -> list[str]:
        cleaned = [e.strip() for e in v]
        if any(not e for e in cleaned):
            raise ValueError("evidence references may not be blank")
        return cleaned


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
    """Commune review (rà soát, bình xét, thẩm định): evidence is the review minutes."""


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
