"""Before the money: what verification found, the public posting of the list and the objections raised while it
is posted, a double-support match overridden, and the changes to an approved household (support type, payee,
withdrawal) that another person re-approves.

Each of these is a step of the household's workflow: its input is signed by the front door and kept whole in
the step's audit row (models/assertion.signed_input), so the history, the audit chain and the timeline all say
what was found, posted, objected to or changed. The criteria and the posting period are policy data
(models/policy.WorkflowPolicy `eligibility`, `posting_days`), versioned like the rest of it.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.actions import ActionInput, ActionResult
from models.household import SupportType


class PostInput(ActionInput):
    """The reviewed list is posted (niêm yết công khai) at `place` from `posted_on`; evidence: the notice and its
    photographs. The period is the policy's `posting_days`."""

    place: str = Field(min_length=3, max_length=200)
    posted_on: date


class PostResult(ActionResult):
    period_ends: date  # the first day approval may be given


class ObjectionInput(ActionInput):
    """An objection (ý kiến, phản ánh) about the household raised while its list is posted, recorded by the
    commune: who raised it and what they said; evidence: the written objection or the minutes of it."""

    objector: str = Field(min_length=2, max_length=200)
    about: str = Field(min_length=3, max_length=2000)
    # The day it was raised (the letter's or the meeting's date), when it is recorded later: it must fall within
    # the posting period. None: today.
    raised_on: date | None = None


class ObjectionResult(ActionResult):
    objection: int  # its id: the sequence number of the step that recorded it


class ObjectionOutcome(StrEnum):
    DISMISSED = "dismissed"  # không có cơ sở: the household stays on the list
    UPHELD_SEND_BACK = "upheld_send_back"  # có cơ sở: the household is reviewed again
    UPHELD_CANCEL = "upheld_cancel"  # có cơ sở: the household is taken off the list


class ResolveObjectionInput(ActionInput):
    """The objection's resolution, with its reason, by someone other than the officer who verified."""

    objection: int = Field(ge=1)
    outcome: ObjectionOutcome


class ResolveObjectionResult(ActionResult):
    objection: int
    outcome: ObjectionOutcome


class OverrideInput(ActionInput):
    """An authorised officer finds that a match with another programme's list is not double support (e.g. the
    other programme supported a different house, or only water or sanitation); reason and evidence required."""

    programme: str = Field(min_length=2, max_length=40)


class OverrideResult(ActionResult):
    programme: str


class ChangeKind(StrEnum):
    SUPPORT_TYPE = "support_type"  # repair ↔ new build: the entitlement is recomputed
    PAYEE = "payee"  # the account holder payments go to (the head of household, unless changed)
    WITHDRAW = "withdraw"  # the household leaves the programme (rút khỏi danh sách)


class ChangeRequestInput(ActionInput):
    """The commune asks to change an approved household; another person with the right role decides."""

    kind: ChangeKind
    support_type: SupportType | None = None
    payee: str | None = Field(default=None, min_length=2, max_length=120)

    @model_validator(mode="after")
    def _value(self) -> ChangeRequestInput:
        wanted = {ChangeKind.SUPPORT_TYPE: "support_type", ChangeKind.PAYEE: "payee"}.get(self.kind)
        for name in ("support_type", "payee"):
            given = getattr(self, name) is not None
            if given != (name == wanted):
                raise ValueError(
                    f"a change of {self.kind.value} " + (f"needs {name}" if not given else f"takes no {name}")
                )
        return self

    @property
    def value(self) -> str | None:
        return self.support_type.value if self.support_type else self.payee


class ChangeRequestResult(ActionResult):
    change: int  # its id: the sequence number of the step that requested it


class DecideChangeInput(ActionInput):
    """The decision on a requested change: approved (it takes effect now) or refused, with a reason for a
    refusal."""

    change: int = Field(ge=1)
    approved: bool = True


class DecideChangeResult(ActionResult):
    change: int
    approved: bool
    entitlement: int | None = None  # a change of support type: the entitlement from now on
    released: int = 0  # đồng the tranches not yet paid gave back to their sources
    reserved: int = 0  # đồng reserved again for them


class ItemStatus(StrEnum):
    OPEN = "open"
    DISMISSED = "dismissed"
    UPHELD = "upheld"
    APPROVED = "approved"
    REFUSED = "refused"


class Posting(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int
    place: str
    posted_on: date
    period_ends: date
    by: str


class Objection(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    objector: str
    about: str
    by: str
    raised_on: date | None = None
    status: ItemStatus = ItemStatus.OPEN
    resolved_by: str | None = None
    resolution: str | None = None


class ChangeRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    kind: ChangeKind
    value: str | None
    by: str
    status: ItemStatus = ItemStatus.OPEN
    decided_by: str | None = None
