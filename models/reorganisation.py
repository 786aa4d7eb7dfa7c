"""One input and one result model for the reorganisation batch and for a household's move to its new unit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.actions import Evidenced
from models.actor import Actor
from models.assertion import ActionAssertion
from models.finance import BatchItem, BatchProgress

REORGANISE_STEP = "reorganise"  # the step a reorganisation's assertion is signed for


def reorganisation_workflow_id(batch_id: str) -> str:
    return f"reorganisation-{batch_id}"


class ReorganiseInput(Evidenced):
    """A provincial administrator applies reorganisation `basis` to every household of the province not yet
    closed, each moving under the policy `policy_version` from then on. Signed once by the front door for the
    batch's workflow and step `reorganise`; every household's move carries it."""

    batch_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{2,80}$")
    basis: str = Field(min_length=3, max_length=80)
    policy_version: str = Field(min_length=1, max_length=40)
    concurrency: int = Field(default=16, ge=1, le=64)
    assertion: ActionAssertion | None = None


class MoveCandidate(BaseModel):
    """A household the reorganisation moves, and where, as the gazetteer in PostgreSQL says."""

    model_config = ConfigDict(frozen=True)

    household_code: str
    from_district: str | None
    from_commune: str
    to_commune: str


class SelectMovesInput(BaseModel):
    batch: ReorganiseInput
    after: str = ""  # the page after this household code
    limit: int = Field(default=500, ge=1, le=2000)


class SelectMovesResult(BaseModel):
    candidates: list[MoveCandidate]
    # Households the gazetteer has no successor for: the batch reports them, it does not move them.
    unmapped: list[BatchItem] = Field(default_factory=list)
    last: str | None = None  # the page's last code; None: nothing after `after`


class ReorganiseRun(BaseModel):
    """The reorganisation workflow's input: the signed batch, and (after a continue-as-new) where the run is and
    what it has counted so far."""

    batch: ReorganiseInput
    after: str = ""
    progress: BatchProgress = Field(default_factory=BatchProgress)
    failed: list[BatchItem] = Field(default_factory=list)


class ApplyMoveInput(BaseModel):
    candidate: MoveCandidate
    batch: ReorganiseInput


class MoveInput(BaseModel):
    """A household's move to its new unit, under the signed reorganisation `batch`."""

    model_config = ConfigDict(frozen=True)

    actor: Actor
    basis: str
    from_district: str | None
    from_commune: str
    to_commune: str
    policy_version: str
    batch: ReorganiseInput

    @property
    def reason(self) -> str:
        """The step's reason as the audit row keeps it (the recording activity writes it the same way)."""
        return move_reason(self.from_district, self.from_commune, self.to_commune, self.basis)


def move_reason(from_district: str | None, from_commune: str, to_commune: str, basis: str) -> str:
    where = " / ".join(p for p in (from_district, from_commune) if p)
    return f"moved from {where} to {to_commune} under {basis}"


class MoveResult(BaseModel):
    household_code: str
    seq: int
    to_commune: str
    previous_version: str
    version: str
    audit_hash: str


class ReorganiseResult(BaseModel):
    batch_id: str
    basis: str
    progress: BatchProgress
    failed: list[BatchItem]  # households not moved, each with the rule that refused it (the first 200)
