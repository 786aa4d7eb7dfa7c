"""The engine's rules for taking a step, as pure functions (no Temporal, no I/O).

Each refusal names its rule in `Refusal.rule` (core/errors.py); the workflow turns it into an ApplicationError
of that type, so a caller, a test or an auditor can tell the refusals apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from core.errors import Refusal
from core.formatting import day, place
from models.actions import ActionInput
from models.actor import Actor
from models.eligibility import EligibilityFindings
from models.finance import REPORTED_MILESTONES, Milestone, TrancheState, TrancheStatus
from models.household import FORWARD, FUNDED_STAGES, PREVIOUS, Household, Stage, Step
from models.policy import WorkflowPolicy
from models.reorganisation import MoveInput
from models.review import (
    ChangeKind,
    ChangeRequest,
    ChangeRequestInput,
    DecideChangeInput,
    ItemStatus,
    Objection,
    ObjectionInput,
    ObjectionOutcome,
    OverrideInput,
    Posting,
    PostInput,
    ResolveObjectionInput,
)
from models.state import HouseholdState, TimelineEntry


@dataclass(frozen=True)
class Target:
    to_stage: Stage
    # The step whose rule (roles, evidence) governs this action.
    governing_step: Step


def target_of(step: Step, stage: Stage, household_code: str) -> Target:
    """Where `step` leads from `stage`, or why it may not be taken now (rule OutOfOrder)."""
    if stage.terminal:
        raise Refusal("OutOfOrder", f"household {household_code} is {stage.value}: no step can be taken")
    if step is Step.CANCEL:
        return Target(Stage.CANCELLED, Step.CANCEL)
    if step is Step.SEND_BACK:
        if stage not in PREVIOUS:
            raise Refusal("OutOfOrder", f"household {household_code} is in {stage.value}: there is no earlier stage")
        return Target(PREVIOUS[stage], governing_step(step, stage))
    expected, to_stage = FORWARD[stage]
    if step is not expected:
        raise Refusal(
            "OutOfOrder",
            f"step {step.value!r} is out of order: household {household_code} is in stage "
            f"{stage.value!r}, whose next step is {expected.value!r}",
        )
    return Target(to_stage, step)


def governing_step(step: Step, stage: Stage) -> Step:
    """The step whose rule (roles, evidence) governs taking `step` from `stage`: sending back is the reviewer's
    refusal of the stage's step, so that step's rule decides; any other step is governed by its own."""
    if step is Step.SEND_BACK and stage in FORWARD:
        return FORWARD[stage][0]
    return step


def sla_due(policy: WorkflowPolicy, stage: Stage, since: datetime | None, reminders: int = 0) -> datetime | None:
    """When a household that entered `stage` at `since` is due to have left it: `since` + the policy's SLA
    days for the stage; after `reminders` reminders, the next one's time (`since` + (reminders + 1) × the SLA).
    None when the policy sets no SLA for the stage, or the time it entered is unknown."""
    days = policy.sla_days.get(stage)
    if not days or since is None:
        return None
    return since + timedelta(days=days) * (reminders + 1)


def check_action(
    *,
    step: Step,
    stage: Stage,
    household: Household,
    policy: WorkflowPolicy,
    action: ActionInput,
    timeline: Sequence[TimelineEntry],
    imported_by: str | None = None,
    review: Review | None = None,
) -> Target:
    """All rules for one action, in the order an officer would want to hear about them (`review`: what the
    rules before the money judge an approval on)."""
    target = target_of(step, stage, household.code)
    check_actor(
        step=step,
        household=household,
        policy=policy,
        actor=action.actor,
        evidence=action.evidence,
        timeline=timeline,
        governing_step=target.governing_step,
        imported_by=imported_by,
    )
    if step in (Step.SEND_BACK, Step.CANCEL) and not (action.reason and action.reason.strip()):
        raise Refusal("ReasonMissing", f"step {step.value!r} needs a reason")
    if step is Step.ACCEPT and policy.acceptance_minutes and len({e.strip() for e in action.evidence}) < 2:
        raise Refusal(
            "MinutesMissing",
            f"acceptance under policy {policy.version} records both minutes (Thông tư 55/2023/TT-BTC, Điều 75): "
            "the acceptance of the finished house and its putting into use (biên bản nghiệm thu; biên bản đưa "
            "vào sử dụng), two evidence references",
        )
    if step is Step.APPROVE and review is not None:
        check_posted(policy, review, household.code)
    return target


def check_actor(
    *,
    step: Step,
    household: Household,
    policy: WorkflowPolicy,
    actor: Actor,
    evidence: Sequence[str],
    timeline: Sequence[TimelineEntry],
    governing_step: Step | None = None,
    tranche: int | None = None,
    imported_by: str | None = None,
) -> None:
    """Role, jurisdiction, segregation of duties and evidence: who may take this step on this household
    (a payout step: on its `tranche`; `imported_by`: who imported the household's list)."""
    governing = governing_step or step
    if governing not in policy.steps:
        raise Refusal("RoleNotAllowed", f"policy {policy.version} lets no one take step {step.value!r}")
    rule = policy.rule(governing)
    if actor.role not in rule.roles:
        raise Refusal(
            "RoleNotAllowed",
            f"role {actor.role!r} may not take step {step.value!r} (policy {policy.version} allows: "
            f"{', '.join(rule.roles)})",
        )
    if not actor.jurisdiction.covers(household):
        raise Refusal(
            "OutsideJurisdiction",
            f"user {actor.user_id} ({actor.jurisdiction}) has no jurisdiction over household {household.code} "
            f"({place(household.province, household.district, household.commune)})",
        )
    _check_segregation(step, actor, policy, timeline, household.code, tranche)
    _check_importer(step, actor, policy, household.code, imported_by)
    if rule.evidence_required and step not in (Step.SEND_BACK, Step.CANCEL) and not evidence:
        raise Refusal("EvidenceMissing", f"step {step.value!r} needs at least one evidence document reference")


_PAYOUT_NEEDS = {
    Step.AUTHORISE_PAYOUT: TrancheStatus.DUE,
    Step.RELEASE_PAYOUT: TrancheStatus.AUTHORISED,
}


def check_payout(
    *,
    step: Step,
    stage: Stage,
    household_code: str,
    tranches: Sequence[TrancheState],
    tranche: int | None,
    milestone: Milestone | None,
    actor: Actor,
) -> TrancheState:
    """The tranche a payout step acts on, or why it may not (order of payout steps, separation of duties)."""
    if stage.terminal:
        raise Refusal("OutOfOrder", f"household {household_code} is {stage.value}: no step can be taken")
    if not tranches:
        raise Refusal(
            "NoTranches", f"household {household_code} has no tranches (not allocated, or allocated before tranches)"
        )
    if step is Step.REPORT_PROGRESS:
        if stage is not Stage.CONSTRUCTION:
            raise Refusal(
                "OutOfOrder",
                f"progress is reported during construction; household {household_code} is in {stage.value}",
            )
        if milestone not in REPORTED_MILESTONES:
            raise Refusal("UnknownMilestone", f"milestone {milestone} is not reported by the commune")
        match = [t for t in tranches if t.milestone is milestone]
        if not match:
            plan = ", ".join(t.milestone.value for t in tranches)
            raise Refusal(
                "UnknownMilestone",
                f"household {household_code}'s tranches fall due at {plan}, not at {milestone.value}",
            )
        if match[0].status is not TrancheStatus.PLANNED:
            raise Refusal(
                "OutOfOrder", f"milestone {milestone.value} of household {household_code} was already reported"
            )
        return match[0]
    if stage not in FUNDED_STAGES:
        raise Refusal("OutOfOrder", f"household {household_code} is in {stage.value}: nothing to pay")
    current = next((t for t in tranches if t.n == tranche), None)
    if current is None:
        raise Refusal("UnknownTranche", f"household {household_code} has no tranche {tranche}")
    needed = _PAYOUT_NEEDS[step]
    if current.status is not needed:
        raise Refusal(
            "OutOfOrder",
            f"tranche {tranche} of household {household_code} is {current.status.value}; "
            f"step {step.value!r} needs it {needed.value}",
        )
    if step is Step.RELEASE_PAYOUT and current.authorised_by == actor.user_id:
        raise Refusal(
            "SegregationOfDuties",
            f"user {actor.user_id} authorised tranche {tranche} of household {household_code} and may not also "
            "release it",
        )
    return current


def check_money(step: Step, target: Target, tranches: Sequence[TrancheState], household_code: str) -> None:
    """What the money of a household paid in tranches forbids: closing it unpaid, or undoing paid money."""
    if not tranches:
        return
    in_flight = [t.n for t in tranches if t.status is TrancheStatus.RELEASED]
    if step is Step.SETTLE:
        unpaid = [t.n for t in tranches if t.status is not TrancheStatus.PAID]
        if unpaid:
            raise Refusal(
                "PaymentsOutstanding",
                f"household {household_code}: tranche(s) {', '.join(map(str, unpaid))} not confirmed paid; "
                "settlement counts only confirmed money",
            )
    if target.to_stage not in FUNDED_STAGES and step in (Step.SEND_BACK, Step.CANCEL):
        if in_flight:
            raise Refusal(
                "PaymentInFlight",
                f"household {household_code}: tranche(s) {', '.join(map(str, in_flight))} are with the payment "
                "channel; wait for its answer",
            )
        paid = [t.n for t in tranches if t.status is TrancheStatus.PAID]
        if step is Step.SEND_BACK and paid:
            raise Refusal(
                "PaymentsMade",
                f"household {household_code}: tranche(s) {', '.join(map(str, paid))} are paid; the allocation "
                "cannot be redone",
            )


def _check_segregation(
    step: Step,
    actor: Actor,
    policy: WorkflowPolicy,
    timeline: Sequence[TimelineEntry],
    code: str,
    tranche: int | None = None,
) -> None:
    # Only the most recent taking of a step counts: after a send-back the step is taken anew (and a tranche's
    # payout step, after a re-allocation or a payment returned to Finance).
    latest: dict[Step, str] = {}
    latest_on_tranche: dict[tuple[Step, int | None], str] = {}
    for entry in timeline:
        latest[entry.step] = entry.user_id
        latest_on_tranche[(entry.step, entry.tranche)] = entry.user_id
    for first, second in policy.distinct_actors:
        other = _other(step, first, second)
        if other is not None and latest.get(other) == actor.user_id:
            raise Refusal(
                "SegregationOfDuties",
                f"user {actor.user_id} took step {other.value!r} on household {code} and may not also take "
                f"step {step.value!r}",
            )
    for first, second in policy.distinct_per_tranche:
        other = _other(step, first, second)
        if other is not None and tranche is not None and latest_on_tranche.get((other, tranche)) == actor.user_id:
            raise Refusal(
                "SegregationOfDuties",
                f"user {actor.user_id} took step {other.value!r} on tranche {tranche} of household {code} and may "
                f"not also take step {step.value!r} on it",
            )


def _other(step: Step, first: Step, second: Step) -> Step | None:
    return second if step is first else first if step is second else None


def _check_importer(step: Step, actor: Actor, policy: WorkflowPolicy, code: str, imported_by: str | None) -> None:
    if imported_by is not None and step in policy.importer_may_not and actor.user_id == imported_by:
        raise Refusal(
            "SegregationOfDuties",
            f"user {actor.user_id} imported the list household {code} is on and may not also take step "
            f"{step.value!r} on it",
        )


def payout_tranche(
    step: Step, tranches: Sequence[TrancheState], tranche: int | None, milestone: Milestone | None
) -> int | None:
    """The tranche a payout step concerns: the one named, or (a progress report) the one its milestone makes due."""
    if step is Step.REPORT_PROGRESS:
        return next((t.n for t in tranches if t.milestone is milestone), None)
    return tranche


def check_move(inp: MoveInput, *, stage: Stage, household: Household, admin_roles: Sequence[str]) -> None:
    """A reorganisation moves a household in flight, once, from the unit it is in, by a policy admin."""
    if stage.terminal:
        raise Refusal("OutOfOrder", f"household {household.code} is {stage.value}: a closed file keeps its units")
    check_policy_change(inp.actor, admin_roles)
    if (household.district, household.commune) != (inp.from_district, inp.from_commune):
        where = " / ".join(p for p in (household.district, household.commune) if p)
        rule = "AlreadyMoved" if household.district is None else "NotInUnit"
        raise Refusal(
            rule,
            f"household {household.code} is in {where}, not in "
            f"{' / '.join(p for p in (inp.from_district, inp.from_commune) if p)}: {inp.basis} does not move it",
        )


def check_policy_change(actor: Actor, admin_roles: Sequence[str]) -> None:
    if actor.role not in admin_roles:
        raise Refusal("RoleNotAllowed", f"role {actor.role!r} may not change the workflow policy")


@dataclass(frozen=True)
class Option:
    """A step the engine would accept from an actor now, with the tranche or milestone it applies to."""

    step: Step
    tranche: int | None = None
    milestone: Milestone | None = None
    item: int | None = None  # the objection resolved or the change decided
    programme: str | None = None  # the other programme whose match is overridden


LIFECYCLE_OPTIONS = (
    Step.VERIFY,
    Step.APPROVE,
    Step.ALLOCATE,
    Step.COMPLETE_CONSTRUCTION,
    Step.ACCEPT,
    Step.SETTLE,
    Step.SEND_BACK,
    Step.CANCEL,
)


def allowed_actions(
    *,
    household: Household,
    policy: WorkflowPolicy,
    actor: Actor,
    stage: Stage,
    timeline: Sequence[TimelineEntry],
    tranches: Sequence[TrancheState],
    imported_by: str | None = None,
    review: Review | None = None,
    matches: Sequence[str] = (),
    payee: str | None = None,
) -> list[Option]:
    """What a page may offer this actor on this household: every step the workflow's validators would
    accept now, found by running those same rules (with evidence and a reason taken as given, since the
    officer supplies them in the form). `review`: the household's posting, objections and changes, and today;
    `matches`: the other programmes whose lists hold it (an override is offered for each one not overridden).
    The engine still decides when the step is sent."""
    probe = ActionInput(actor=actor, evidence=["…", "……"], reason="…")  # as many documents as a step needs
    options: list[Option] = []
    for step in LIFECYCLE_OPTIONS:
        try:
            target = check_action(
                step=step,
                stage=stage,
                household=household,
                policy=policy,
                action=probe,
                timeline=timeline,
                imported_by=imported_by,
                review=review,
            )
            check_money(step, target, tranches, household.code)
        except Refusal:
            continue
        options.append(Option(step))
    if review is not None:
        for option, inp in _review_probes(actor, review, matches):
            try:
                check_review(
                    step=option.step,
                    inp=inp,
                    stage=stage,
                    household=household,
                    policy=policy,
                    timeline=timeline,
                    review=review,
                    tranches=tranches,
                    payee=payee,
                )
            except Refusal:
                continue
            options.append(option)
    for step in (Step.REPORT_PROGRESS, Step.AUTHORISE_PAYOUT, Step.RELEASE_PAYOUT):
        for t in tranches:
            milestone = t.milestone if step is Step.REPORT_PROGRESS else None
            try:
                check_actor(
                    step=step,
                    household=household,
                    policy=policy,
                    actor=actor,
                    evidence=probe.evidence,
                    timeline=timeline,
                    tranche=t.n,
                    imported_by=imported_by,
                )
                check_payout(
                    step=step,
                    stage=stage,
                    household_code=household.code,
                    tranches=tranches,
                    tranche=t.n,
                    milestone=milestone,
                    actor=actor,
                )
            except Refusal:
                continue
            options.append(Option(step, tranche=None if milestone else t.n, milestone=milestone))
    return options


def _review_probes(actor: Actor, review: Review, matches: Sequence[str]) -> list[tuple[Option, ActionInput]]:
    """One probe input per review step (and per open objection, open change, or match not overridden), with
    what the officer would type taken as given."""
    given = {"actor": actor, "evidence": ["…"], "reason": "…"}
    probes: list[tuple[Option, ActionInput]] = [
        (Option(Step.POST_LIST), PostInput(**given, place="…" * 3, posted_on=review.today)),
        (Option(Step.RECORD_OBJECTION), ObjectionInput(**given, objector="…" * 2, about="…" * 3)),
        (Option(Step.REQUEST_CHANGE), ChangeRequestInput(**given, kind=ChangeKind.WITHDRAW)),
    ]
    for o in review.objections:
        if o.status is ItemStatus.OPEN:
            inp = ResolveObjectionInput(**given, objection=o.id, outcome=ObjectionOutcome.DISMISSED)
            probes.append((Option(Step.RESOLVE_OBJECTION, item=o.id), inp))
    for c in review.changes:
        if c.status is ItemStatus.OPEN:
            probes.append((Option(Step.DECIDE_CHANGE, item=c.id), DecideChangeInput(**given, change=c.id)))
    for programme in matches:
        if programme not in review.overridden:
            inp = OverrideInput(**given, programme=programme)
            probes.append((Option(Step.OVERRIDE_DOUBLE_SUPPORT, programme=programme), inp))
    return probes


# ---------------------------------------------------------------- before the money (models/review.py)


@dataclass(frozen=True)
class Review:
    """What the workflow knows about a household's review that the rules before the money judge: the posting of
    its list, the objections raised, the changes asked for, and today's date in Vietnam (from workflow.now())."""

    today: date
    posting: Posting | None = None
    objections: Sequence[Objection] = ()
    changes: Sequence[ChangeRequest] = ()
    overridden: Sequence[str] = ()


def review_of(state: HouseholdState, today: date) -> Review:
    """What a household's state holds of its review, as the rules judge it on `today`."""
    return Review(
        today=today,
        posting=state.posting,
        objections=state.objections,
        changes=state.changes,
        overridden=state.overridden,
    )


def check_eligibility(findings: EligibilityFindings | None, policy: WorkflowPolicy, household_code: str) -> None:
    """Verification under a policy with criteria records what was found, and the household meets one of them
    (and has had no earlier State housing support): refused naming the criterion otherwise."""
    criteria = policy.eligibility
    if criteria is None:
        return
    if findings is None:
        raise Refusal(
            "FindingsMissing",
            f"policy {policy.version} verifies a household on its findings ({criteria.basis}): record the materials "
            "of the foundation, frame and roof, the floor area and household size, and any earlier support",
        )
    if criteria.earlier_support_excludes and findings.earlier_support:
        raise Refusal(
            "NotEligible",
            f"household {household_code} had earlier State housing support ({findings.earlier_support}): "
            f"not eligible under {criteria.basis}",
        )
    if not findings.has_house:
        return
    parts = findings.non_durable_parts
    if len(parts) >= criteria.min_non_durable_parts:
        return
    per_person = findings.area_per_person
    if per_person is not None and per_person < criteria.area_per_person_below_m2:
        return
    raise Refusal(
        "NotEligible",
        f"household {household_code} meets no criterion of {criteria.basis}: it has a house, "
        f"{len(parts)} of its 3 main parts are of non-durable materials (needs at least "
        f"{criteria.min_non_durable_parts}), and {per_person:.1f} m² per person (needs under "
        f"{criteria.area_per_person_below_m2:g})",
    )


POSTING_BACKDATE_DAYS = 60  # a posting recorded later than this after it went up is refused: post it again


def check_posted(policy: WorkflowPolicy, review: Review, household_code: str) -> None:
    """Approval under a policy with a posting period: the list was posted, the period is over, and no objection
    raised while it was posted is still open."""
    if policy.posting_days is None:
        return
    if review.posting is None:
        raise Refusal(
            "NotPosted",
            f"household {household_code} has not been posted publicly: policy {policy.version} posts the reviewed "
            f"list for {policy.posting_days} days before approval",
        )
    if review.today < review.posting.period_ends:
        raise Refusal(
            "PostingPeriod",
            f"the posting of household {household_code} at {review.posting.place} runs until "
            f"{day(review.posting.period_ends - timedelta(days=1))}: approval from {day(review.posting.period_ends)}",
        )
    open_ = [o.id for o in review.objections if o.status is ItemStatus.OPEN]
    if open_:
        raise Refusal(
            "ObjectionOpen",
            f"household {household_code} has open objection(s) {', '.join(map(str, open_))}: resolve them first",
        )


REVIEW_STAGES = {
    Step.POST_LIST: {Stage.APPROVAL},
    Step.RECORD_OBJECTION: {Stage.APPROVAL},
    Step.RESOLVE_OBJECTION: {Stage.APPROVAL},
    Step.OVERRIDE_DOUBLE_SUPPORT: {Stage.VERIFICATION, Stage.APPROVAL},
    Step.REQUEST_CHANGE: {Stage.FUND_ALLOCATION, Stage.CONSTRUCTION, Stage.ACCEPTANCE, Stage.SETTLEMENT},
    Step.DECIDE_CHANGE: {Stage.FUND_ALLOCATION, Stage.CONSTRUCTION, Stage.ACCEPTANCE, Stage.SETTLEMENT},
}
# Steps that need a reason whatever their outcome (a refused change needs one too: check_review).
REVIEW_REASONS = frozenset({Step.RESOLVE_OBJECTION, Step.OVERRIDE_DOUBLE_SUPPORT, Step.REQUEST_CHANGE})


def check_review(
    *,
    step: Step,
    inp: ActionInput,
    stage: Stage,
    household: Household,
    policy: WorkflowPolicy,
    timeline: Sequence[TimelineEntry],
    review: Review,
    tranches: Sequence[TrancheState],
    payee: str | None = None,
) -> Stage:
    """All rules for a step before the money (or a change after approval): the stage it may be taken in, who may
    take it, and what it needs; returns the stage it leads to."""
    code = household.code
    if stage.terminal:
        raise Refusal("OutOfOrder", f"household {code} is {stage.value}: no step can be taken")
    if stage not in REVIEW_STAGES[step]:
        allowed = ", ".join(sorted(s.value for s in REVIEW_STAGES[step]))
        raise Refusal("OutOfOrder", f"step {step.value!r} is taken in {allowed}; household {code} is in {stage.value}")
    check_actor(
        step=step, household=household, policy=policy, actor=inp.actor, evidence=inp.evidence, timeline=timeline
    )
    if step in REVIEW_REASONS and not (inp.reason and inp.reason.strip()):
        raise Refusal("ReasonMissing", f"step {step.value!r} needs a reason")
    if step is Step.POST_LIST:
        return _check_post(inp, policy, review, code, stage)
    if step is Step.RECORD_OBJECTION:
        if review.posting is None:
            raise Refusal("NotPosted", f"household {code} has not been posted: objections are raised while it is")
        raised = inp.raised_on or review.today
        if raised > review.today:
            raise Refusal("ObjectionDate", f"an objection raised on {day(raised)} is in the future")
        if raised < review.posting.posted_on:
            raise Refusal(
                "ObjectionDate",
                f"an objection raised on {day(raised)} predates the posting of household {code} "
                f"({day(review.posting.posted_on)})",
            )
        if raised >= review.posting.period_ends:
            raise Refusal(
                "PostingClosed",
                f"the posting of household {code} ended on {day(review.posting.period_ends - timedelta(days=1))}",
            )
        return stage
    if step is Step.RESOLVE_OBJECTION:
        found = next((o for o in review.objections if o.id == inp.objection), None)
        if found is None:
            raise Refusal("UnknownObjection", f"household {code} has no objection {inp.objection}")
        if found.status is not ItemStatus.OPEN:
            raise Refusal("AlreadyResolved", f"objection {found.id} of household {code} was {found.status.value}")
        if found.by == inp.actor.user_id:
            raise Refusal(
                "SegregationOfDuties",
                f"user {inp.actor.user_id} recorded objection {found.id} of household {code} and may not also "
                "resolve it",
            )
        # Upholding takes the household off the list or back from approval: only a role that may cancel it, or
        # approve it (whose refusal a send-back is), may do that.
        governs = {ObjectionOutcome.UPHELD_CANCEL: Step.CANCEL, ObjectionOutcome.UPHELD_SEND_BACK: Step.APPROVE}
        if inp.outcome in governs and inp.actor.role not in policy.rule(governs[inp.outcome]).roles:
            raise Refusal(
                "RoleNotAllowed",
                f"role {inp.actor.role!r} may not uphold an objection as {inp.outcome.value} (policy "
                f"{policy.version}: the roles of {governs[inp.outcome].value!r})",
            )
        return {
            ObjectionOutcome.DISMISSED: stage,
            ObjectionOutcome.UPHELD_SEND_BACK: Stage.VERIFICATION,
            ObjectionOutcome.UPHELD_CANCEL: Stage.CANCELLED,
        }[inp.outcome]
    if step is Step.OVERRIDE_DOUBLE_SUPPORT:
        if inp.programme in review.overridden:
            raise Refusal(
                "AlreadyOverridden", f"the match of household {code} with {inp.programme} was overridden already"
            )
        return stage
    if step is Step.REQUEST_CHANGE:
        pending = [c.id for c in review.changes if c.status is ItemStatus.OPEN]
        if pending:
            raise Refusal("ChangePending", f"household {code} has change {pending[0]} waiting for a decision")
        current = {ChangeKind.SUPPORT_TYPE: household.support_type.value, ChangeKind.PAYEE: payee}.get(inp.kind)
        if inp.kind is ChangeKind.PAYEE and current is None:
            current = household.head_of_household
        if inp.kind is not ChangeKind.WITHDRAW and inp.value == current:
            raise Refusal("NoChange", f"household {code}'s {inp.kind.value} is {current} already")
        return stage
    # DECIDE_CHANGE
    found = next((c for c in review.changes if c.id == inp.change), None)
    if found is None:
        raise Refusal("UnknownChange", f"household {code} has no change request {inp.change}")
    if found.status is not ItemStatus.OPEN:
        raise Refusal("AlreadyDecided", f"change {found.id} of household {code} was {found.status.value}")
    if not inp.approved:
        if not (inp.reason and inp.reason.strip()):
            raise Refusal("ReasonMissing", "a change refused needs a reason")
        return stage
    # A new payee too: an instruction already sent names the old one, and the authoriser approved that one.
    in_flight = [t.n for t in tranches if t.status in (TrancheStatus.AUTHORISED, TrancheStatus.RELEASED)]
    if in_flight:
        raise Refusal(
            "PaymentInFlight",
            f"household {code}: tranche(s) {', '.join(map(str, in_flight))} are authorised or with the payment "
            "channel; decide the change once they are answered",
        )
    if found.kind is ChangeKind.WITHDRAW:
        return Stage.CANCELLED
    return stage


def _check_post(inp: ActionInput, policy: WorkflowPolicy, review: Review, code: str, stage: Stage) -> Stage:
    if policy.posting_days is None:
        raise Refusal("NoPosting", f"policy {policy.version} has no posting period")
    if review.posting is not None:
        raise Refusal(
            "AlreadyPosted",
            f"household {code} was posted at {review.posting.place} on {day(review.posting.posted_on)}",
        )
    if inp.posted_on > review.today:
        raise Refusal("PostingDate", f"a posting on {day(inp.posted_on)} is in the future")
    if inp.posted_on < review.today - timedelta(days=POSTING_BACKDATE_DAYS):
        raise Refusal(
            "PostingDate",
            f"a posting on {day(inp.posted_on)} is recorded more than {POSTING_BACKDATE_DAYS} days after it went "
            "up: post the list again",
        )
    return stage
