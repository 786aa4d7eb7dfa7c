"""Who is really acting: the signed assertion every step's input carries, checked inside the workflow.

Pure and deterministic (the keys come from `core.signing.trusted()`, installed by the worker; validators do
not run on replay). A step is accepted only if the assertion is signed by an officers' front-door key valid
when it was issued, names this household's workflow, this step, this input and this user, has not expired,
and was not used before on this household. A payout batch's steps carry the batch's one assertion instead,
for the batch's workflow; the household checks that the batch covers it and says what its step says.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from core import signing
from core.errors import Refusal
from models.actions import SetPolicyInput, StepInput
from models.assertion import OFFICERS, ActionAssertion, input_digest
from models.finance import PayoutInput
from models.household import Household
from models.reorganisation import REORGANISE_STEP, MoveInput, ReorganiseInput, reorganisation_workflow_id

RULE = "Unauthenticated"


def batch_workflow_id(batch_id: str) -> str:
    return f"payout-batch-{batch_id}"


def batch_step(action: str) -> str:
    return f"payout_batch:{action}"


def _refuse(message: str) -> Refusal:
    return Refusal(RULE, message)


def check_step(
    inp: StepInput | SetPolicyInput,
    *,
    workflow_id: str,
    step: str,
    now: datetime,
    seen: Collection[str],
    household: Household | None = None,
    keys: signing.TrustedKeys | None = None,
) -> ActionAssertion:
    """The assertion of an officer's step (or of the payout batch it belongs to), verified; refuses with
    `Unauthenticated` naming what is wrong."""
    keys = keys or signing.trusted()
    batch = inp.batch if isinstance(inp, PayoutInput) else None
    try:
        if batch is not None:
            a = batch.assertion
            check_batch_covers(inp, batch, step, household)
            verify_batch(batch, keys=keys, now=now)
        else:
            a = inp.assertion
            keys.verify(
                a,
                workflow_id=workflow_id,
                step=step,
                input_digest=input_digest(inp),
                user_id=inp.actor.user_id,
                holder=OFFICERS,
                now=now,
            )
    except signing.Unauthenticated as err:
        raise _refuse(err.message) from None
    if a.nonce in seen:
        raise _refuse(f"assertion {a.nonce} was used before on this household: a replayed action is refused")
    return a


def verify_batch(batch, *, keys: signing.TrustedKeys, now: datetime) -> None:
    """A payout batch's own assertion: signed by an officers' front door for this batch's workflow and action,
    this input and its actor. Raises `signing.Unauthenticated`. The households' validators and the batch's
    selecting activity both ask this."""
    keys.verify(
        batch.assertion,
        workflow_id=batch_workflow_id(batch.batch_id),
        step=batch_step(batch.action.value),
        input_digest=input_digest(batch),
        user_id=batch.actor.user_id,
        holder=OFFICERS,
        now=now,
        max_ttl=signing.BATCH_TTL,
    )


def check_batch_covers(inp, batch, step: str, household: Household | None) -> None:
    expected_step = {"authorise": "authorise_payout", "release": "release_payout"}[batch.action.value]
    if step != expected_step:
        raise signing.Unauthenticated(f"batch {batch.batch_id} is a {batch.action.value} batch, not {step!r}")
    if inp.batch_id != batch.batch_id or inp.tranche != batch.tranche:
        raise signing.Unauthenticated(
            f"the step says batch {inp.batch_id}, tranche {inp.tranche}; the signed batch "
            f"is {batch.batch_id}, tranche {batch.tranche}"
        )
    if inp.actor != batch.actor or list(inp.evidence) != list(batch.evidence):
        raise signing.Unauthenticated(f"the step's actor or evidence is not what batch {batch.batch_id} signed")
    if household is not None:
        sel = batch.selection
        if (
            (sel.district and sel.district != household.district)
            or (sel.decision_ref and sel.decision_ref != household.decision_ref)
            or (sel.codes and household.code not in sel.codes)
        ):
            raise signing.Unauthenticated(f"household {household.code} is not in batch {batch.batch_id}'s selection")


def verify_reorganisation(
    batch: ReorganiseInput, *, keys: signing.TrustedKeys, now: datetime, check_expiry=True
) -> None:
    """A reorganisation's one assertion: signed by an officers' front door for this batch's workflow and step
    `reorganise`, over this input and its actor. Raises `signing.Unauthenticated`."""
    if batch.assertion is None:
        raise signing.Unauthenticated("the reorganisation carries no signed assertion: start it through a front door")
    keys.verify(
        batch.assertion,
        workflow_id=reorganisation_workflow_id(batch.batch_id),
        step=REORGANISE_STEP,
        input_digest=input_digest(batch),
        user_id=batch.actor.user_id,
        holder=OFFICERS,
        now=now,
        max_ttl=signing.BATCH_TTL,
        check_expiry=check_expiry,
    )


def check_move(
    inp: MoveInput, *, now: datetime, seen: Collection[str], keys: signing.TrustedKeys | None = None
) -> ActionAssertion:
    """A household's move: its reorganisation is signed, and the move says what the reorganisation signed (its
    actor, its basis, its policy version); refuses with `Unauthenticated`."""
    keys = keys or signing.trusted()
    batch = inp.batch
    try:
        verify_reorganisation(batch, keys=keys, now=now)
        if (inp.actor, inp.basis, inp.policy_version) != (batch.actor, batch.basis, batch.policy_version):
            raise signing.Unauthenticated(
                f"the move's actor, basis or policy is not what reorganisation {batch.batch_id} signed"
            )
    except signing.Unauthenticated as err:
        raise _refuse(err.message) from None
    if batch.assertion.nonce in seen:  # not a forgery: this signed batch has moved the household (a retried send)
        raise Refusal("AlreadyMoved", f"reorganisation {batch.batch_id} moved this household already")
    return batch.assertion
