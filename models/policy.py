"""Who may take which step, how long a stage may last: data, versioned, changeable mid-programme."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.eligibility import EligibilityCriteria
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
    # Pairs of payout steps that one person may not both take on the same tranche (a tranche is paid on the
    # word of one person and released by another, whoever authorised it).
    distinct_per_tranche: list[tuple[Step, Step]] = Field(default_factory=list)
    # Steps the person who imported the household's list may not take on it (who puts a household on the
    # list does not also approve it).
    importer_may_not: list[Step] = Field(default_factory=list)
    # Roles that may replace the policy of a household already in flight.
    policy_admin_roles: list[str] = Field(default_factory=lambda: ["admin"])
    # Roles that may import an approved list (and so start households' workflows).
    import_roles: list[str] = Field(default_factory=lambda: ["province_officer", "admin"])
    # The role sets below gate powers outside a household's steps; none may be empty (a policy version that
    # left nobody able to restore the audit log, or to read the sealed payloads, is refused when applied).
    # Roles that manage funding sources, record money received and reimburse district advances (cấp bù).
    finance_roles: list[str] = Field(min_length=1, default_factory=lambda: ["finance_officer", "admin"])
    # Roles that register decisions (quyết định) that approve lists or allocate budgets.
    decision_roles: list[str] = Field(
        min_length=1, default_factory=lambda: ["finance_officer", "admin", "province_officer", "district_officer"]
    )
    # Roles that record VBSP preferential loans (co-financing, never grant money).
    loan_roles: list[str] = Field(min_length=1, default_factory=lambda: ["vbsp_officer", "finance_officer"])
    # Roles that see the finance pages (reconciliation, payout batches) and export the reconciliation.
    finance_view_roles: list[str] = Field(
        min_length=1, default_factory=lambda: ["finance_officer", "treasury_officer", "province_officer", "admin"]
    )
    # Roles that see the audit pages (timelines, the three-way check) and export the reconciliation.
    audit_view_roles: list[str] = Field(min_length=1, default_factory=lambda: ["auditor", "admin", "province_officer"])
    # Roles the codec endpoint opens sealed payloads for (never the officers who act on households, nor
    # Finance), and the roles it seals payloads for under the engine's key.
    codec_roles: list[str] = Field(min_length=1, default_factory=lambda: ["auditor", "admin"])
    codec_encode_roles: list[str] = Field(min_length=1, default_factory=lambda: ["admin"])
    # Roles that may re-record a household's steps from its history into a lost audit log.
    restore_roles: list[str] = Field(min_length=1, default_factory=lambda: ["admin"])
    # A released payment not confirmed within this many hours is escalated to Finance (and again after
    # each further period); it is never re-sent on a timeout, only on a definite failure.
    payment_confirm_hours: int = Field(default=72, ge=1)
    # Before that, the channel is asked for the status of a released payment after each of these gaps in
    # minutes, then every last gap: a lost callback or a crash is found within minutes, not days. An
    # instruction the channel never received is sent again under the same id (paid at most once).
    payment_inquiry_minutes: list[int] = Field(default_factory=lambda: [2, 5, 15, 60, 240, 720])
    # Instructions sent for one tranche before a failed payment goes back to Finance to re-authorise.
    payment_max_attempts: int = Field(default=2, ge=1)
    finance_agency: str = "Sở Tài chính"
    # Before the money. Versions without them (before 2026.2) record verification without findings and approve
    # without a posting, as they did: their histories replay unchanged.
    # The criteria verification's findings are checked against (None: findings are optional and not checked).
    eligibility: EligibilityCriteria | None = None
    # Days the reviewed list stays posted before approval may be given (None: no posting step).
    posting_days: int | None = Field(default=None, ge=0, le=90)
    # Acceptance records both minutes the commune settles against (Circular 55/2023/TT-BTC art. 75): the
    # acceptance of the finished house and its putting into use, as two evidence references (False before 2026.2).
    acceptance_minutes: bool = False
    # After the money: days a grievance has to be resolved in (the Law on Complaints gives 30 for a first one).
    grievance_days: int = Field(default=30, ge=1, le=90)

    def inquiry_offset_minutes(self, n: int) -> int | None:
        """Minutes after release of the n-th status inquiry (from 1); None when none are asked."""
        gaps = [g for g in self.payment_inquiry_minutes if g > 0]
        if not gaps:
            return None
        return sum(gaps[:n]) + max(0, n - len(gaps)) * gaps[-1]

    def reads_money(self, role: str) -> bool:
        """Whether `role` reads the province's money records whole: Finance's views and the auditors'."""
        return role in self.finance_view_roles or role in self.audit_view_roles

    def rule(self, step: Step) -> StepRule:
        try:
            return self.steps[step]
        except KeyError:
            raise LookupError(f"policy {self.version} has no rule for step {step.value!r}") from None
