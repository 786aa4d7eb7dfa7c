"""What the recording activity checks of a step against the gazetteer, inside the step's transaction: that an
officer's unit still exists on the day of the step, and that a move goes where the reorganisation sends the
household, under a policy the policy table holds, by a policy admin of the policy it replaces.

The workflow's validator has checked the move's signature and that it starts from the unit the workflow's copy
of the household is in; the destination and the policy are decided here, from PostgreSQL, and the workflow
applies the policy this activity hands back, not one an update carried.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from core.errors import Refusal
from core.formatting import VIETNAM, day, place
from db import audit, households
from db import gazetteer as gazetteer_db
from db import policy as policy_db
from models.actor import Actor
from models.gazetteer import Level
from models.household import Step
from models.policy import WorkflowPolicy
from models.records import TransitionRecord
from models.reorganisation import REORGANISE_STEP, move_reason


def _day(rec: TransitionRecord) -> date:
    return rec.at.astimezone(VIETNAM).date()


async def check_actor_unit(session, rec: TransitionRecord) -> None:
    """The recording activity's check of `unit_in_force` on the day of the step (the channel has no unit)."""
    if rec.step in (Step.PAYMENT_CONFIRMED, Step.PAYMENT_FAILED):
        return
    await unit_in_force(session, rec.actor, _day(rec))


async def unit_in_force(session, actor: Actor, on: date) -> None:
    """Refuse (`UnitAbolished`) a step by an officer whose district or commune no longer exists on `on`: its acts
    before the date stay valid as history; from the date its steps belong to the unit that succeeded it (the
    commune or the province). The front door asks it too, so the officer hears it before anything is sent."""
    ended = await gazetteer_db.ended_unit(session, actor.jurisdiction, on)
    if ended is not None:
        under = f" under {ended.basis}" if ended.basis else ""
        raise Refusal(
            "UnitAbolished",
            f"user {actor.user_id} acts for {ended.name}, which ceased to exist on {day(ended.valid_until)}"
            f"{under}: its steps belong to the unit that succeeded it",
        )


@dataclass(frozen=True)
class Move:
    """Where a move takes the household (the register's columns) and the policy it runs under from then on."""

    commune: str
    district: str | None  # the new unit's district: None on the two-tier map
    basis: str
    policy: WorkflowPolicy

    def register(self, at) -> dict[str, Any]:
        """The register's columns a move sets (where the household was imported stays, kept by a trigger)."""
        return {"district": self.district, "commune": self.commune, "moved_under": self.basis, "moved_at": at}


async def check_move(session, rec: TransitionRecord, row: households.HouseholdRow) -> Move:
    """The move is the reorganisation's for this registered household: the reorganisation is stored and in
    effect, its succession sends the household's unit to `moved_to`, the reason says so, and the policy is the
    table's. Returns the move as it will be written."""
    basis = rec.evidence[0] if rec.evidence else ""
    reorg = await gazetteer_db.reorganisation(session, basis)
    if reorg is None:
        raise Refusal("UnknownReorganisation", f"no reorganisation {basis!r} is loaded ('reform load')")
    if reorg.effective > _day(rec):
        raise Refusal("NotInEffect", f"{basis} takes effect on {day(reorg.effective)}; nothing moves before")
    if row.moved_under == basis:
        raise Refusal("AlreadyMoved", f"household {rec.household_code} was moved under {basis} already")
    if rec.assertion is None or rec.assertion.step != REORGANISE_STEP:
        raise Refusal("Unauthenticated", f"a move of {rec.household_code} is signed by a reorganisation only")
    g = await gazetteer_db.stored(session)
    found = g.successor(basis, row.district, row.commune, rec.household_code) if g else None
    if found is None or found[1].name != rec.moved_to:
        goes = found[1].name if found else "nowhere (no succession covers its unit)"
        raise Refusal(
            "NotTheSuccessor",
            f"household {rec.household_code} of {place(row.district, row.commune)} goes to {goes} under {basis}, "
            f"not to {rec.moved_to}",
        )
    if rec.reason != move_reason(row.district, row.commune, rec.moved_to, basis):
        raise Refusal("ReasonMismatch", f"the move of {rec.household_code} does not say where it moves from and to")
    current = await policy_db.stored_workflow_policy(session, rec.policy_version)
    if current is None or rec.actor.role not in current.policy_admin_roles:
        raise Refusal(
            "RoleNotAllowed",
            f"role {rec.actor.role!r} may not move households (policy {rec.policy_version} names "
            f"{', '.join(current.policy_admin_roles) if current else 'nobody'})",
        )
    new = found[1]
    parent = g.unit(new.parent) if new.parent else None
    district = parent.name if parent is not None and parent.level is Level.DISTRICT else None
    return Move(new.name, district, basis, await _policy(session, rec.moved_policy))


async def recorded_move(session, prior_id: int, row: households.HouseholdRow) -> Move:
    """A move retried after its commit: what the first attempt wrote (the register's units, the policy its
    reorganisation signed), whatever this attempt's input says."""
    signed = await audit.signed_input_of(session, prior_id) or {}
    return Move(row.commune, row.district, row.moved_under or "", await _policy(session, signed.get("policy_version")))


async def _policy(session, version: str | None) -> WorkflowPolicy:
    policy = await policy_db.stored_workflow_policy(session, version)
    if policy is None:
        raise Refusal("UnknownPolicy", f"policy version {version!r} is not in the policy table")
    return policy
