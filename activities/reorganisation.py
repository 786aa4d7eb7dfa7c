"""Activities of a reorganisation: select a page of the households it moves (with where each goes, from the
gazetteer in PostgreSQL), then move each one through its own workflow's `move` update."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from core import signing
from core.errors import Refusal
from core.formatting import day, today
from db import gazetteer as gazetteer_db
from db import policy as policy_db
from db import signing_keys, users
from db.engine import Sessions
from models.finance import BatchItem
from models.household import workflow_id_for
from models.reorganisation import (
    ApplyMoveInput,
    MoveCandidate,
    MoveInput,
    ReorganiseInput,
    SelectMovesInput,
    SelectMovesResult,
    reorganisation_workflow_id,
)
from workflows import authn
from workflows.household import HouseholdWorkflow


async def check_reorganisation(session, batch: ReorganiseInput, *, caller: str | None) -> None:
    """The batch is signed by a front door for the reorganisation workflow asking (`caller`), by a policy admin
    of today's policy, for a stored reorganisation in effect and a stored policy version; refuses otherwise."""
    if caller is not None and caller != reorganisation_workflow_id(batch.batch_id):
        raise Refusal(authn.RULE, f"reorganisation {batch.batch_id} was not signed for {caller}")
    try:
        keys = await signing_keys.trusted_for(session, batch.assertion.key_id if batch.assertion else "")
        authn.verify_reorganisation(batch, keys=keys, now=datetime.now(UTC))
    except signing.Unauthenticated as err:
        raise Refusal(authn.RULE, err.message) from None
    await users.confirm_actor(session, batch.actor)
    admins = (await policy_db.policy_today(session)).policy_admin_roles
    if batch.actor.role not in admins:
        raise Refusal("RoleNotAllowed", f"role {batch.actor.role!r} may not apply a reorganisation")
    reorg = await gazetteer_db.reorganisation(session, batch.basis)
    if reorg is None:
        raise Refusal("UnknownReorganisation", f"no reorganisation {batch.basis!r} is loaded ('reform load')")
    if reorg.effective > today():
        raise Refusal("NotInEffect", f"{batch.basis} takes effect on {day(reorg.effective)}")
    if await policy_db.stored_workflow_policy(session, batch.policy_version) is None:
        raise Refusal("UnknownPolicy", f"policy version {batch.policy_version!r} is not in the policy table")


class ReorganisationActivities:
    def __init__(self, client: Client, sessions: Sessions) -> None:
        self._client = client
        self._sessions = sessions

    @activity.defn(name="select_moves")
    async def select_moves(self, inp: SelectMovesInput) -> SelectMovesResult:
        batch = inp.batch
        async with self._sessions() as session:
            try:
                await check_reorganisation(session, batch, caller=activity.info().workflow_id)
            except Refusal as err:
                raise err.application_error() from None
            rows = await gazetteer_db.to_move(
                session, batch.basis, batch.actor.jurisdiction.province, after=inp.after, limit=inp.limit
            )
            g = await gazetteer_db.stored(session)
        candidates, unmapped = [], []
        for r in rows:
            # One recorded moved under this basis is asked again from where it was: a crash may have come between
            # the move's record and its workflow (which refuses a second move).
            again = r.moved_under == batch.basis
            district, commune = (r.old_district, r.old_commune) if again else (r.district, r.commune)
            found = g.successor(batch.basis, district, commune, r.code) if g else None
            if found is None:
                where = " / ".join(p for p in (district, commune) if p)
                unmapped.append(
                    BatchItem(
                        household_code=r.code,
                        outcome="skipped" if district is None else "failed",
                        rule="AlreadyMoved" if district is None else "NoSuccession",
                        message=f"{batch.basis} does not move {where}",
                    )
                )
                continue
            candidates.append(
                MoveCandidate(
                    household_code=r.code, from_district=district, from_commune=commune, to_commune=found[1].name
                )
            )
        return SelectMovesResult(candidates=candidates, unmapped=unmapped, last=rows[-1].code if rows else None)

    @activity.defn(name="apply_move")
    async def apply_move(self, inp: ApplyMoveInput) -> BatchItem:
        c, batch = inp.candidate, inp.batch
        move = MoveInput(
            actor=batch.actor,
            basis=batch.basis,
            from_district=c.from_district,
            from_commune=c.from_commune,
            to_commune=c.to_commune,
            policy_version=batch.policy_version,
            batch=batch,
        )
        handle = self._client.get_workflow_handle(workflow_id_for(c.household_code))
        try:
            # One update id per signed batch and household: a retried activity is answered by the same update; a
            # batch signed again asks anew (and the household refuses a second move).
            nonce = batch.assertion.nonce if batch.assertion else batch.batch_id
            await handle.execute_update(HouseholdWorkflow.move, move, id=f"move-{nonce}-{c.household_code}")
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                skipped = cause.type in ("AlreadyMoved", "OutOfOrder")  # moved, or closed, since the page was read
                return BatchItem(
                    household_code=c.household_code,
                    outcome="skipped" if skipped else "failed",
                    rule=cause.type,
                    message=cause.message,
                )
            raise
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise  # the activity is retried
            # The workflow closed since the page was read.
            return BatchItem(household_code=c.household_code, outcome="skipped", rule="Closed", message=err.message)
        return BatchItem(household_code=c.household_code, outcome="done", message=f"to {c.to_commune}")
