"""The household, its lifecycle stages and the steps that move it between them."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Stage(StrEnum):
    """Where a household waits. The six programme stages, then two terminal states."""

    VERIFICATION = "verification"
    APPROVAL = "approval"
    FUND_ALLOCATION = "fund_allocation"
    CONSTRUCTION = "construction"
    ACCEPTANCE = "acceptance"
    SETTLEMENT = "settlement"
    CLOSED = "closed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Stage.CLOSED, Stage.CANCELLED)


class Step(StrEnum):
    """An action an officer takes on a household."""

    VERIFY = "verify"
    APPROVE = "approve"
    ALLOCATE = "allocate"
    COMPLETE_CONSTRUCTION = "complete_construction"
    ACCEPT = "accept"
    SETTLE = "settle"
    SEND_BACK = "send_back"
    CANCEL = "cancel"
    # Payout steps: they move money, not the household between stages.
    REPORT_PROGRESS = "report_progress"  # the commune reports a construction milestone (foundation, 30% done)
    AUTHORISE_PAYOUT = "authorise_payout"  # Finance authorises a tranche
    RELEASE_PAYOUT = "release_payout"  # the paying unit (commune or treasury) releases it to the payment channel
    # Recorded from the payment channel's answer, by the channel's system user.
    PAYMENT_CONFIRMED = "payment_confirmed"
    PAYMENT_FAILED = "payment_failed"
    # A policy admin replaced the household's workflow policy (from = to = the current stage; no money).
    SET_POLICY = "set_policy"
    # A reorganisation of local government moved the household to its new unit (and the new unit's policy).
    MOVE = "move"
    # Before the money (models/review.py): the list posted, objections raised and resolved, a double-support
    # match overridden; after approval, a change asked for by the commune and decided by another person.
    POST_LIST = "post_list"
    RECORD_OBJECTION = "record_objection"
    RESOLVE_OBJECTION = "resolve_objection"
    OVERRIDE_DOUBLE_SUPPORT = "override_double_support"
    REQUEST_CHANGE = "request_change"
    DECIDE_CHANGE = "decide_change"


PAYOUT_STEPS = frozenset({Step.REPORT_PROGRESS, Step.AUTHORISE_PAYOUT, Step.RELEASE_PAYOUT})
CHANNEL_STEPS = frozenset({Step.PAYMENT_CONFIRMED, Step.PAYMENT_FAILED})
# Steps that record a fact about the household without moving it (unless an outcome sends it back or ends it).
REVIEW_STEPS = frozenset(
    {
        Step.POST_LIST,
        Step.RECORD_OBJECTION,
        Step.RESOLVE_OBJECTION,
        Step.OVERRIDE_DOUBLE_SUPPORT,
        Step.REQUEST_CHANGE,
        Step.DECIDE_CHANGE,
    }
)


# The programme's order of work: the step that ends each stage and the stage it leads to.
# This is the lifecycle itself, so it lives in code; who may take each step is data (WorkflowPolicy).
FORWARD: dict[Stage, tuple[Step, Stage]] = {
    Stage.VERIFICATION: (Step.VERIFY, Stage.APPROVAL),
    Stage.APPROVAL: (Step.APPROVE, Stage.FUND_ALLOCATION),
    Stage.FUND_ALLOCATION: (Step.ALLOCATE, Stage.CONSTRUCTION),
    Stage.CONSTRUCTION: (Step.COMPLETE_CONSTRUCTION, Stage.ACCEPTANCE),
    Stage.ACCEPTANCE: (Step.ACCEPT, Stage.SETTLEMENT),
    Stage.SETTLEMENT: (Step.SETTLE, Stage.CLOSED),
}
# Sending back for revision returns the file to the stage before; verification has nothing before it.
PREVIOUS: dict[Stage, Stage] = {
    Stage.APPROVAL: Stage.VERIFICATION,
    Stage.FUND_ALLOCATION: Stage.APPROVAL,
    Stage.CONSTRUCTION: Stage.FUND_ALLOCATION,
    Stage.ACCEPTANCE: Stage.CONSTRUCTION,
    Stage.SETTLEMENT: Stage.ACCEPTANCE,
}
# A reservation of funds is held while the household is in one of these stages.
FUNDED_STAGES = frozenset({Stage.CONSTRUCTION, Stage.ACCEPTANCE, Stage.SETTLEMENT})


class BeneficiaryGroup(StrEnum):
    MERITORIOUS = "meritorious"  # người có công, thân nhân liệt sĩ
    POOR = "poor"  # hộ nghèo
    NEAR_POOR = "near_poor"  # hộ cận nghèo
    DISASTER = "disaster"  # thiên tai, biến đổi khí hậu
    OTHER = "other"


class SupportType(StrEnum):
    NEW_BUILD = "new_build"  # xây mới
    REPAIR = "repair"  # sửa chữa


class Household(BaseModel):
    """One household on an approved list. `head_of_household` and `cccd` are personal data."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    code: str = Field(pattern=r"^[A-Z0-9][A-Z0-9._-]{2,39}$", description="Household code on the list")
    head_of_household: str = Field(min_length=2, max_length=120)
    cccd: str = Field(pattern=r"^\d{12}$", description="12-digit citizen ID of the head of household")
    province: str = Field(min_length=2, max_length=80)
    # None once the household is moved to a commune of the two-tier map (from 1 July 2025 there are no districts).
    district: str | None = Field(default=None, min_length=2, max_length=80)
    commune: str = Field(min_length=2, max_length=80)
    beneficiary_group: BeneficiaryGroup
    support_type: SupportType
    decision_ref: str = Field(min_length=3, max_length=80, description="Approving decision, e.g. 270/QĐ-UBND")
    # The national target programme that has already identified and budgeted this household, if any
    # (e.g. MTQG-GNBV, sustainable poverty reduction). Its budget covers the household first.
    programme: str | None = Field(default=None, pattern=r"^[A-Z0-9][A-Z0-9-]{1,39}$")

    @field_validator("programme", mode="before")
    @classmethod
    def _blank_programme(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip().upper()
            return v or None
        return v

    @field_validator("district", mode="before")
    @classmethod
    def _blank_district(cls, v: object) -> object:
        return (v.strip() or None) if isinstance(v, str) else v

    @property
    def place(self) -> str:
        """Its units, smallest first: 'commune, district, province' (no district after the reform)."""
        return ", ".join(p for p in (self.commune, self.district, self.province) if p)

    @field_validator("code", mode="before")
    @classmethod
    def _upper_code(cls, v: object) -> object:
        return v.strip().upper() if isinstance(v, str) else v

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.code)


def workflow_id_for(code: str) -> str:
    return f"household-{code}"
