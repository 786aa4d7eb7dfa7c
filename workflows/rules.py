"""The engine's rules for taking a step, as pure functions (no Temporal, no I/O).

Each refusal names its rule in `RuleViolation.rule`; the workflow turns it into an ApplicationError
of that type, so a caller, a test or an auditor can tell the refusals apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.actions import ActionInput
from models.actor import Actor
from models.household import FORWARD, PREVIOUS, Household, Stage, Step
from models.policy import WorkflowPolicy
from models.state import TimelineEntry


class RuleViolation(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(frozen=True)
class Target:
    to_stage: Stage
    # The step whose rule (roles, evidence) governs this action.
    governing_step: Step


def target_of(step: Step, stage: Stage, household_code: str) -> Target:
    """Where `step` leads from `stage`, or why it may not be taken now (rule OutOfOrder)."""
    if stage.terminal:
        raise RuleViolation("OutOfOrder", f"household {household_code} is {stage.value}: no step can be taken")
    if step is Step.CANCEL:
        return Target(Stage.CANCELLED, Step.CANCEL)
    if step is Step.SEND_BACK:
        if stage not in PREVIOUS:
            raise RuleViolation(
                "OutOfOrder", f"household {household_code} is in {stage.value}: there is no earlier stage"
            )
        # Sending back is the reviewer's refusal of the stage's step, so that step's roles decide.
        return Target(PREVIOUS[stage], FORWARD[stage][0])
    expected, to_stage = FORWARD[stage]
    if step is not expected:
        raise RuleViolation(
            "OutOfOrder",
            f"step {step.value!r} is out of order: household {household_code} is in stage "
            f"{stage.value!r}, whose next step is {expected.value!r}",
        )
    return Target(to_stage, step)


def check_action(
    *,
    step: Step,
    stage: Stage,
    household: Household,
    policy: WorkflowPolicy,
    action: ActionInput,
    timeline: Sequence[TimelineEntry],
) -> Target:
    """All rules for one action, in the order an officer would want to hear about them."""
    target = target_of(step, stage, household.code)
    actor = action.actor
    rule = policy.rule(target.governing_step)
    if actor.role not in rule.roles:
        raise RuleViolation(
            "RoleNotAllowed",
            f"role {actor.role!r} may not take step {step.value!r} (policy {policy.version} allows: "
            f"{', '.join(rule.roles)})",
        )
    if not actor.jurisdiction.covers(household):
        raise RuleViolation(
            "OutsideJurisdiction",
            f"user {actor.user_id} ({actor.jurisdiction}) has no jurisdiction over household {household.code} "
            f"({household.province} / {household.district} / {household.commune})",
        )
    _check_segregation(step, actor, policy, timeline, household.code)
    if step in (Step.SEND_BACK, Step.CANCEL) and not (action.reason and action.reason.strip()):
        raise RuleViolation("ReasonMissing", f"step {step.value!r} needs a reason")
    if rule.evidence_required and step not in (Step.SEND_BACK, Step.CANCEL) and not action.evidence:
        raise RuleViolation(
            "EvidenceMissing", f"step {step.value!r} needs at least one evidence document reference"
        )
    return target


def _check_segregation(
    step: Step, actor: Actor, policy: WorkflowPolicy, timeline: Sequence[TimelineEntry], code: str
) -> None:
    # Only the most recent taking of a step counts: after a send-back the step is taken anew.
    latest: dict[Step, str] = {}
    for entry in timeline:
        latest[entry.step] = entry.user_id
    for first, second in policy.distinct_actors:
        other = second if step is first else first if step is second else None
        if other is not None and latest.get(other) == actor.user_id:
            raise RuleViolation(
                "SegregationOfDuties",
                f"user {actor.user_id} took step {other.value!r} on household {code} and may not also take "
                f"step {step.value!r}",
            )


def check_policy_change(actor: Actor, admin_roles: Sequence[str]) -> None:
    if actor.role not in admin_roles:
        raise RuleViolation("RoleNotAllowed", f"role {actor.role!r} may not change the workflow policy")
