"""Taking a step on a household: resolve the user, send the workflow update, report the engine's answer."""

from __future__ import annotations

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities import moves
from archive.source import Found, Histories
from archive.state import ReplayFailed, state_from_history
from archive.store import HistoryArchive
from core.errors import Refusal
from core.formatting import today
from core.signing import SigningRing, sign_input
from db import households, registry, users
from db import policy as policy_db
from db.engine import Sessions
from models import actions as m
from models import finance as f
from models import review as r
from models.actions import StepInput
from models.actor import Actor
from models.household import Step, workflow_id_for
from models.state import HouseholdState
from workflows import rules
from workflows.household import HouseholdWorkflow

UPDATES = {
    Step.VERIFY: (HouseholdWorkflow.verify, m.VerifyInput),
    Step.APPROVE: (HouseholdWorkflow.approve, m.ApproveInput),
    Step.ALLOCATE: (HouseholdWorkflow.allocate, m.AllocateInput),
    Step.COMPLETE_CONSTRUCTION: (HouseholdWorkflow.complete_construction, m.CompleteConstructionInput),
    Step.ACCEPT: (HouseholdWorkflow.accept, m.AcceptInput),
    Step.SETTLE: (HouseholdWorkflow.settle, m.SettleInput),
    Step.SEND_BACK: (HouseholdWorkflow.send_back, m.SendBackInput),
    Step.CANCEL: (HouseholdWorkflow.cancel, m.CancelInput),
    Step.REPORT_PROGRESS: (HouseholdWorkflow.report_progress, f.ReportProgressInput),
    Step.AUTHORISE_PAYOUT: (HouseholdWorkflow.authorise_payout, f.AuthorisePayoutInput),
    Step.RELEASE_PAYOUT: (HouseholdWorkflow.release_payout, f.ReleasePayoutInput),
    Step.POST_LIST: (HouseholdWorkflow.post_list, r.PostInput),
    Step.RECORD_OBJECTION: (HouseholdWorkflow.record_objection, r.ObjectionInput),
    Step.RESOLVE_OBJECTION: (HouseholdWorkflow.resolve_objection, r.ResolveObjectionInput),
    Step.OVERRIDE_DOUBLE_SUPPORT: (HouseholdWorkflow.override_double_support, r.OverrideInput),
    Step.REQUEST_CHANGE: (HouseholdWorkflow.request_change, r.ChangeRequestInput),
    Step.DECIDE_CHANGE: (HouseholdWorkflow.decide_change, r.DecideChangeInput),
}


async def take_step(
    client: Client,
    sessions: Sessions,
    code: str,
    step: Step,
    user_id: str,
    *,
    evidence: list[str] | None = None,
    reason: str | None = None,
    source: str | None = None,
    tranche: int | None = None,
    milestone: str | None = None,
    details: dict | None = None,
    signer: SigningRing,
) -> m.ActionResult | f.PayoutResult:
    """Take `step` as `user_id`, whom the calling front door has authenticated: the input goes to the
    household's workflow signed with the front door's ring (`signer`); the engine refuses it unsigned.
    `details`: the fields of the step's own input model beyond evidence and reason (a verification's
    findings, a posting's place and date, an objection, a change; models/review.py)."""
    async with sessions() as session:
        actor = await users.require_actor(session, user_id)
        await moves.unit_in_force(session, actor, today())
    if step not in UPDATES:
        raise Refusal("UnknownStep", f"{step.value!r} is recorded from the payment channel, not taken by an officer")
    update, input_type = UPDATES[step]
    try:
        inp = _step_input(
            input_type,
            actor,
            evidence or [],
            reason=reason,
            source=source,
            tranche=tranche,
            milestone=milestone,
            details=details or {},
        )
    except ValueError as err:
        raise Refusal("InvalidInput", str(err)) from None
    workflow_id = workflow_id_for(code.strip().upper())
    inp = sign_input(signer, inp, workflow_id=workflow_id, step=step.value, user_id=actor.user_id)
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.execute_update(update, inp)
    except (WorkflowUpdateFailedError, RPCError) as err:
        raise Refusal.of(err) from None


def _step_input(
    input_type: type[StepInput],
    actor: Actor,
    evidence: list[str],
    *,
    reason: str | None,
    source: str | None,
    tranche: int | None,
    milestone: str | None,
    details: dict,
) -> StepInput:
    """The step's input, with the fields its model has: a milestone to report, a tranche to authorise or
    release, a reason for a lifecycle step (and the source asked for, to allocate), the `details` of a step
    before the money. Refused (ValueError) when the model refuses it."""
    if issubclass(input_type, f.ReportProgressInput):
        return input_type.model_validate({"actor": actor, "evidence": evidence, "milestone": milestone})
    if issubclass(input_type, f.PayoutInput):
        return input_type.model_validate({"actor": actor, "evidence": evidence, "tranche": tranche})
    if issubclass(input_type, m.AllocateInput):
        return input_type(actor=actor, evidence=evidence, reason=reason, source=source)
    if issubclass(input_type, m.ActionInput):
        unknown = sorted(set(details) - set(input_type.model_fields))
        if unknown:
            raise ValueError(f"step input {input_type.__name__} has no field {', '.join(unknown)}")
        return input_type.model_validate({**details, "actor": actor, "evidence": evidence, "reason": reason})
    raise TypeError(f"{input_type.__name__} is not an officer's step input")


async def household_state(
    client: Client, code: str, *, sessions: Sessions | None = None, archive: HistoryArchive | None = None
) -> HouseholdState:
    """The household's state, from its workflow's `state` query. With `sessions` and the `archive` (as the
    caller's settings open it: archive.source.open_archive), a file whose workflow Temporal no longer holds
    (retention removed it) is read from the archive: its history replayed against the same workflow code; a
    registered household in neither place is refused as `HistoryMissing`."""
    return (await household_state_from(client, code, sessions=sessions, archive=archive))[0]


async def household_state_from(
    client: Client, code: str, *, sessions: Sessions | None = None, archive: HistoryArchive | None = None
) -> tuple[HouseholdState, str]:
    """`household_state`, and where it was read: "temporal" or "archive"."""
    code = code.strip().upper()
    handle = client.get_workflow_handle(workflow_id_for(code))
    try:
        return await handle.query(HouseholdWorkflow.state), "temporal"
    except RPCError as err:
        if sessions is None or archive is None or err.status != RPCStatusCode.NOT_FOUND:
            raise Refusal.of(err) from None
    found = await household_history(client, sessions, code, archive)
    return await _replayed(client, code, found), found.where


async def household_view(
    client: Client, sessions: Sessions, code: str, archive: HistoryArchive
) -> tuple[HouseholdState, Found]:
    """A household's state and its history (what its page shows), each read once: an archived history is
    replayed for the state, a live workflow is asked."""
    found = await household_history(client, sessions, code, archive)
    if found.where == "archive":
        return await _replayed(client, code, found), found
    return await household_state(client, code), found


async def _replayed(client: Client, code: str, found: Found) -> HouseholdState:
    try:
        return await state_from_history(found.history, client.data_converter)
    except ReplayFailed as err:
        raise Refusal("ReplayFailed", f"the archived history of {code} does not replay on this code: {err}") from None


async def household_history(client: Client, sessions: Sessions, code: str, archive: HistoryArchive) -> Found:
    """The household's workflow history: Temporal's while it holds it, the archive's after (opened by the
    caller from its settings, trusting the witness's key: archive.source.open_archive). Refused as
    `HistoryMissing` for a registered household in neither place, `UnknownHousehold` for one never imported."""
    code = code.strip().upper()
    # Refused as WitnessKeyMissing when the archive is signed and no witness key was given to check it.
    found = await Histories(client, archive).get(workflow_id_for(code))
    if found is not None:
        return found
    async with sessions() as session:
        registered = await households.get_household(session, code) is not None
    if registered:
        raise Refusal(
            "HistoryMissing",
            f"household {code} is registered, but its workflow history is neither on the "
            "Temporal server nor in the archive (removed by retention before it was archived)",
        )
    raise Refusal("UnknownHousehold", f"no household {code} on any imported list")


async def next_actions(sessions: Sessions, state: HouseholdState, actor: Actor) -> list[rules.Option]:
    """The steps the engine would accept from `actor` on this household now (what a page offers), given
    the state the caller has just queried from its workflow."""
    async with sessions() as session:
        household = await households.get_household(session, state.household_code)
        policy = await policy_db.workflow_policy(session, state.policy_version)
        matches = await registry.open_matches(session, state.household_code)
    if household is None:
        return []
    return rules.allowed_actions(
        household=household,
        policy=policy,
        actor=actor,
        stage=state.stage,
        timeline=state.timeline,
        tranches=state.tranches,
        imported_by=state.imported_by,
        review=rules.review_of(state, today()),
        matches=sorted({m.programme for m in matches}),
        payee=state.payee,
    )
