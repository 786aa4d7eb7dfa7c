"""Activities of a payout batch: pick the households, then take the step on each one through its own
workflow's update, so every household's validators decide exactly as for a single action."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from core import signing
from core.errors import Refusal
from db import finance as finance_db
from db import signing_keys, users
from db.engine import Sessions
from models.finance import (
    ApplyPayoutInput,
    AuthorisePayoutInput,
    BatchAction,
    BatchItem,
    PayoutCandidate,
    ReleasePayoutInput,
    SelectPayoutsInput,
    TrancheStatus,
)
from models.household import workflow_id_for
from workflows import authn
from workflows.household import HouseholdWorkflow

# The statuses that mean the action was taken on the tranche already.
DONE_ALREADY = {
    BatchAction.AUTHORISE: {TrancheStatus.AUTHORISED, TrancheStatus.RELEASED, TrancheStatus.PAID},
    BatchAction.RELEASE: {TrancheStatus.RELEASED, TrancheStatus.PAID},
}


async def _check_signed(session, inp: SelectPayoutsInput) -> None:
    """Refuse (`Unauthenticated`) a batch that no officers' front door signed, one signed for another batch
    workflow than the one asking, or a selection that is not the signed one: a PayoutBatchWorkflow started
    by hand selects nothing."""
    batch = inp.batch
    if batch is None:
        raise Refusal(authn.RULE, "the batch carries no signed assertion: start it through a front door")
    if activity.info().workflow_id != authn.batch_workflow_id(batch.batch_id):
        raise Refusal(
            authn.RULE,
            f"batch {batch.batch_id} was signed for {authn.batch_workflow_id(batch.batch_id)}"
            f", not for {activity.info().workflow_id}",
        )
    if (inp.selection, inp.tranche, inp.actor) != (batch.selection, batch.tranche, batch.actor):
        raise Refusal(authn.RULE, f"the selection is not what batch {batch.batch_id} signed")
    try:
        keys = await signing_keys.trusted_for(session, batch.assertion.key_id if batch.assertion else "")
        authn.verify_batch(batch, keys=keys, now=datetime.now(UTC))
    except signing.Unauthenticated as err:
        raise Refusal(authn.RULE, err.message) from None


async def _claim_run(session, inp: SelectPayoutsInput) -> None:
    """Record that this run took the batch's signed assertion, or refuse (`Unauthenticated`) if another run took
    it: the sealed start input can be copied out of a finished batch's history and started again under the same
    id, and within BATCH_TTL it would take the step on households that became due since, in the officer's name.
    The same run asking again (an activity retry) is that run. The primary key on the nonce decides a race."""
    batch, info = inp.batch, activity.info()
    taken_by = await finance_db.claim_batch_run(
        session,
        nonce=batch.assertion.nonce,
        batch_id=batch.batch_id,
        workflow_id=info.workflow_id,
        run_id=info.workflow_run_id,
        signed_by=batch.assertion.user_id,
    )
    if taken_by != info.workflow_run_id:
        raise Refusal(
            authn.RULE, f"signed batch {batch.batch_id} already ran in run {taken_by}: sign it again to run it again"
        )


# The tranche status a batch's action needs: only then does the batch's run write the household a ticket.
READY = {BatchAction.AUTHORISE: TrancheStatus.DUE, BatchAction.RELEASE: TrancheStatus.AUTHORISED}


class BatchActivities:
    def __init__(self, client: Client, sessions: Sessions) -> None:
        self._client = client
        self._sessions = sessions

    async def _ticket(self, inp: ApplyPayoutInput, status: TrancheStatus) -> BatchItem | None:
        """Write this household's ticket for the batch's step (the recording activity takes a batch's step
        only against one), when the caller is the run that claimed the signed batch and the tranche is ready;
        a refusal as the item otherwise (None: go on and send the step). Without a ticket a step copied from
        another household of the batch is refused; with a tranche not ready the household's rules name why."""
        batch, info = inp.batch, activity.info()
        if batch is None or batch.assertion is None:
            return BatchItem(
                household_code=inp.household_code,
                outcome="failed",
                rule=authn.RULE,
                message="the batch carries no signed assertion",
            )
        async with self._sessions() as session, session.begin():
            claimed_by = await finance_db.batch_run(session, batch.assertion.nonce)
            caller = (info.workflow_type, info.workflow_id, info.workflow_run_id)
            if caller != ("PayoutBatchWorkflow", authn.batch_workflow_id(batch.batch_id), claimed_by):
                return BatchItem(
                    household_code=inp.household_code,
                    outcome="failed",
                    rule=authn.RULE,
                    message=f"only the run that claimed batch {batch.batch_id} applies it",
                )
            if status is READY[inp.action]:
                await finance_db.issue_batch_ticket(
                    session,
                    nonce=batch.assertion.nonce,
                    household_code=inp.household_code,
                    tranche=inp.tranche,
                    action=inp.action.value,
                    run_id=info.workflow_run_id,
                )
        return None

    @activity.defn(name="select_payouts")
    async def select_payouts(self, inp: SelectPayoutsInput) -> list[str]:
        """The selection's households (batches started before `select_payout_candidates` existed)."""
        return [c.household_code for c in await self.select_payout_candidates(inp)]

    @activity.defn(name="select_payout_candidates")
    async def select_payout_candidates(self, inp: SelectPayoutsInput) -> list[PayoutCandidate]:
        """The selection's households with their tranche's status, so a re-run skips what is done without
        asking each (closed) workflow. Each signed batch runs once (`_claim_run`)."""
        async with self._sessions() as session, session.begin():
            try:
                await _check_signed(session, inp)
                await users.confirm_actor(session, inp.actor)
                await _claim_run(session, inp)
            except Refusal as err:
                raise err.application_error() from None
            rows = await finance_db.tranches_for_batch(
                session,
                tranche=inp.tranche,
                district=inp.selection.district,
                decision_ref=inp.selection.decision_ref,
                codes=inp.selection.codes,
                province=inp.actor.jurisdiction.province,
            )
        return [PayoutCandidate(household_code=r.household_code, status=TrancheStatus(r.status)) for r in rows]

    @activity.defn(name="apply_payout")
    async def apply_payout(self, inp: ApplyPayoutInput) -> BatchItem:
        handle = self._client.get_workflow_handle(workflow_id_for(inp.household_code))
        try:
            state = await handle.query(HouseholdWorkflow.state)
        except RPCError as err:
            return BatchItem(household_code=inp.household_code, outcome="failed", rule="Closed", message=err.message)
        tranche = next((t for t in state.tranches if t.n == inp.tranche), None)
        if tranche is None:
            return BatchItem(
                household_code=inp.household_code,
                outcome="failed",
                rule="UnknownTranche",
                message=f"no tranche {inp.tranche}",
            )
        if tranche.status in DONE_ALREADY[inp.action]:
            return BatchItem(
                household_code=inp.household_code,
                outcome="skipped",
                rule="AlreadyDone",
                message=f"tranche {inp.tranche} is {tranche.status.value}",
                amount=0,
            )
        # The signed batch rides along: the household verifies it covers this step (workflows/authn.py).
        step_type = AuthorisePayoutInput if inp.action is BatchAction.AUTHORISE else ReleasePayoutInput
        try:
            step = step_type(
                actor=inp.actor, tranche=inp.tranche, evidence=inp.evidence, batch_id=inp.batch_id, batch=inp.batch
            )
        except ValidationError as err:  # a batch signed before its evidence was checked like a step's
            return BatchItem(household_code=inp.household_code, outcome="failed", rule="InvalidInput", message=str(err))
        ticket = await self._ticket(inp, tranche.status)
        if ticket is not None:
            return ticket
        try:
            if isinstance(step, AuthorisePayoutInput):
                result = await handle.execute_update(HouseholdWorkflow.authorise_payout, step)
            else:
                result = await handle.execute_update(HouseholdWorkflow.release_payout, step)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                return BatchItem(
                    household_code=inp.household_code, outcome="failed", rule=cause.type, message=cause.message
                )
            raise
        return BatchItem(household_code=inp.household_code, outcome="done", amount=result.amount)
