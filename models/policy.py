"""Who may take which step, how long a stage may last: data, versioned, changeable mid-programme."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.household import Stage, Step


class StepRule(BaseModel):
    model_config = ConfigDict(frozen=True)

    roles: list[str] = Field(min_length=1)
    responsible_agency: str
    evidence_required: bool = True


class WorkflowPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    steps: dict[Step, StepRule]
    # Days a household may wait in a stage before the responsible agency is reminded.
    sla_days: dict[Stage, int] = Field(default_factory=dict)
    # Pairs of steps that one person may not both take on the same household.
    distinct_actors: list[tuple[Step, Step]] = Field(default_factory=list)
    # Roles that may replace the policy of a household already in flight.
    policy_admin_roles: list[str] = Field(default_factory=lambda: ["admin"])
    # Roles that may import an approved list (and so start households' workflows).
    import_roles: list[str] = Field(default_factory=lambda: ["province_officer", "admin"])
    # A released payment not confirmed within this many hours is escalated to Finance (and again after
    # each further period); it is never re-sent on a timeout, only on a definite failure.
    payment_confirm_hours: int = Field(default=72, ge=1)
    # Instructions sent for one tranche before a failed payment goes back to Finance to re-authorise.
    payment_max_attempts: int = Field(default=2, ge=1)
    finance_agency: str = "Sở Tài chính"

    def rule(self, step: Step) -> StepRule:
        try:
            return self.steps[step]
        except KeyError:
            raise LookupError(f"policy {self.version} has no rule for step {step.value!r}") from None
