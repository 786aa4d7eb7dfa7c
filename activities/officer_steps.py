"""What the recording activity checks, inside the step's transaction, before it writes anything: that the
step comes from the household's own workflow, that the workflow's copy of the household is the registered
one, and that an officer's step carries the assertion a front door signed for exactly this step.

The update's validator checked the assertion already (workflows/authn.py); this is the second check, with
the public keys PostgreSQL holds, for whatever reaches the activity another way: any workflow can schedule
this worker's activities. The payment channel's answers are checked in activities/channel_answers.py.

A payout batch's step carries the batch's one assertion, signed for the batch's workflow and step
`payout_batch:<action>`, and the batch's input as its signed input: its signature is verified, then that the
batch covers this step (action, tranche, actor, evidence, the registered household in its selection) by
the same rule the validator applies (`authn.check_batch_covers`).
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

from pydantic import ValidationError
from temporalio import activity

from core import signing
from core.errors import Refusal
from core.formatting import place
from db import households, signing_keys
from db import policy as policy_db
from models.assertion import OFFICERS, ActionAssertion, digest_of
from models.finance import PayoutBatchInput
from models.household import Step, workflow_id_for
from models.policy import WorkflowPolicy
from models.records import TransitionRecord
from models.reorganisation import REORGANISE_STEP, ReorganiseInput

# The rules' home, workflows/authn.py and workflows/rules.py, is imported where used: importing the package
# `workflows` here would import the workflow, which imports this worker's activities (a cycle).
RULE = signing.Unauthenticated.rule
WORKFLOW_TYPE = "HouseholdWorkflow"


def check_caller(rec: TransitionRecord) -> None:
    """A household's steps are recorded by its own workflow (`household-<code>`, type HouseholdWorkflow),
    under the keys it derives (`<workflow id>#<seq>`). Called in-process (audit restore) there is no caller
    to check, only the record."""
    expected = workflow_id_for(rec.household_code)
    if rec.workflow_id != expected or rec.idempotency_key != f"{expected}#{rec.seq}":
        raise Refusal(
            RULE,
            f"a step of household {rec.household_code} is recorded by workflow {expected} "
            f"under key {expected}#{rec.seq}, not by {rec.workflow_id} under "
            f"{rec.idempotency_key}",
        )
    if not activity.in_activity():
        return
    info = activity.info()
    if info.workflow_type != WORKFLOW_TYPE or info.workflow_id != expected:
        raise Refusal(
            RULE,
            f"workflow {info.workflow_id} ({info.workflow_type}) may not record steps of "
            f"household {rec.household_code}",
        )


def check_household(rec: TransitionRecord, row: households.HouseholdRow) -> None:
    """The workflow's copy of the household must be the registered row where the step depends on it: the
    support type and group decide the entitlement and the tranche plan, and the actor's jurisdiction (the
    validator judged it on the copy's commune) must cover the registered household."""
    differs = [
        f"{name} {getattr(rec, name).value!r} (registered: {getattr(row, name)!r})"
        for name in ("support_type", "beneficiary_group")
        if getattr(rec, name).value != getattr(row, name)
    ]
    if differs:
        raise Refusal(
            "HouseholdMismatch",
            f"the workflow's copy of household {rec.household_code} says {', '.join(differs)}: the step is refused",
        )
    if not rec.actor.jurisdiction.covers(row):  # type: ignore[arg-type]  # reads province/district/commune only
        raise Refusal(
            "OutsideJurisdiction",
            f"user {rec.actor.user_id} ({rec.actor.jurisdiction}) has no "
            f"jurisdiction over household {rec.household_code} as registered ({row.province} / "
            f"{place(row.district, row.commune)})",
        )


async def verify_officer_record(session, rec: TransitionRecord, row: households.HouseholdRow) -> None:
    """The step's assertion, with the key PostgreSQL holds for it (`check_signed_step`)."""
    a, signed = rec.assertion, rec.signed_input
    if a is None or signed is None:
        raise Refusal(
            RULE,
            f"step {rec.step.value!r} of household {rec.household_code} carries no signed "
            "assertion: sign in through a front door",
        )
    check_signed_step(
        await signing_keys.trusted_for(session, a.key_id),
        a,
        signed,
        workflow_id=rec.workflow_id,
        step=rec.step,
        user_id=rec.actor.user_id,
        at=rec.at,
        rec=rec,
        row=row,
    )


def check_signed_step(
    keys: signing.TrustedKeys,
    a: ActionAssertion,
    signed: dict,
    *,
    workflow_id: str,
    step: Step,
    user_id: str,
    at: datetime,
    rec: TransitionRecord | None = None,
    row: households.HouseholdRow | None = None,
) -> None:
    """An officer's step as signed: by an officers' key valid when issued, for this household's workflow (or
    the batch's), this step and user, over `signed`, issued no later than the step; and, given the record,
    `signed` says what it records (and a batch covers it; `row`: the registered household in its selection).
    Expiry is the validator's: an accepted step may wait for the lock, or for a restarted worker, longer than
    an assertion lives; auditors judge it years later. The one home of this check: the recording activity
    and `audit verify` call it."""
    from workflows import authn

    if a.step == REORGANISE_STEP:
        check_signed_move(keys, a, signed, user_id=user_id, at=at, rec=rec)
        return
    batch = batch_of(a, signed)
    try:
        if batch is not None:
            keys.verify(
                a,
                workflow_id=authn.batch_workflow_id(batch.batch_id),
                step=authn.batch_step(batch.action.value),
                input_digest=digest_of(signed),
                user_id=user_id,
                holder=OFFICERS,
                now=at,
                max_ttl=signing.BATCH_TTL,
                check_expiry=False,
            )
        else:
            keys.verify(
                a,
                workflow_id=workflow_id,
                step=step.value,
                input_digest=digest_of(signed),
                user_id=user_id,
                holder=OFFICERS,
                now=at,
                check_expiry=False,
            )
        if a.issued_at - signing.CLOCK_SKEW > at:
            raise signing.Unauthenticated(f"the assertion was issued at {a.issued_at.isoformat()}, after the step")
        if rec is not None and batch is not None:
            step_as_sent = SimpleNamespace(
                batch_id=batch.batch_id, tranche=rec.tranche, actor=rec.actor, evidence=rec.evidence
            )
            authn.check_batch_covers(step_as_sent, batch, step.value, row)
    except signing.Unauthenticated as err:
        raise Refusal(RULE, err.message) from None
    if rec is not None:
        check_says(rec, signed, batch)


def check_signed_move(
    keys: signing.TrustedKeys, a: ActionAssertion, signed: dict, *, user_id: str, at: datetime, rec=None
) -> None:
    """A move carries its reorganisation's one assertion, signed for the reorganisation's workflow: verified,
    issued no later than the move, and (given the record) the move says what the reorganisation signed: its
    actor, its basis as the evidence, its batch id and its policy version."""
    from workflows import authn

    try:
        batch = ReorganiseInput.model_validate(signed, context={"recorded": True})
    except ValidationError:
        raise Refusal(RULE, "the assertion is a reorganisation's, but its signed input is not one") from None
    try:
        if batch.assertion is None:
            batch = batch.model_copy(update={"assertion": a})
        if batch.actor.user_id != user_id:
            raise signing.Unauthenticated(f"reorganisation {batch.batch_id} is signed by {batch.actor.user_id}")
        authn.verify_reorganisation(batch, keys=keys, now=at, check_expiry=False)
        if a.issued_at - signing.CLOCK_SKEW > at:
            raise signing.Unauthenticated(f"the assertion was issued at {a.issued_at.isoformat()}, after the step")
    except signing.Unauthenticated as err:
        raise Refusal(RULE, err.message) from None
    if rec is None:
        return
    said = (batch.actor, [batch.basis], batch.batch_id, batch.policy_version)
    recorded = (rec.actor, list(rec.evidence), rec.batch_id, rec.moved_policy)
    if said != recorded or rec.step is not Step.MOVE:
        raise Refusal(RULE, f"the move of {rec.household_code} is not what reorganisation {batch.batch_id} signed")


def batch_of(a: ActionAssertion, signed: dict) -> PayoutBatchInput | None:
    from workflows import authn

    if not a.step.startswith(authn.batch_step("")):
        return None
    try:
        # A signed input as recorded (in the step's record, or in an audit row years later): read back as it was
        # signed, a blank evidence reference from before batches refused one included (models/actions.py).
        return PayoutBatchInput.model_validate(signed, context={"recorded": True})
    except ValidationError:
        raise Refusal(RULE, "the assertion is a payout batch's, but its signed input is not a batch") from None


def check_says(rec: TransitionRecord, signed: dict, batch: PayoutBatchInput | None) -> None:
    """What the record will write (who, evidence, reason, source, tranche, milestone, batch) is what was signed."""
    if batch is not None:
        said = {"reason": f"batch {batch.batch_id}"}
    else:
        said = {name: signed.get(name) for name in ("actor", "reason", "source", "milestone")}
        said["evidence"] = signed.get("evidence", [])
        if signed.get("batch_id"):
            said["reason"] = f"batch {signed['batch_id']}"
        if "tranche" in signed:
            said["tranche"] = signed["tranche"]
        if rec.step is Step.SET_POLICY:
            said["evidence"] = [(signed.get("policy") or {}).get("version")]
    if rec.batch_id is not None:  # steps recorded since the batch has its own field (before: the reason alone)
        said["batch_id"] = batch.batch_id if batch is not None else signed.get("batch_id")
    recorded = {
        "actor": rec.actor.model_dump(mode="json"),
        "evidence": list(rec.evidence),
        "reason": rec.reason,
        "source": rec.source,
        "milestone": rec.milestone,
        "tranche": rec.tranche,
        "batch_id": rec.batch_id,
    }
    differs = sorted(name for name, value in said.items() if value != recorded[name])
    if differs:
        raise Refusal(
            RULE, f"the record's {', '.join(differs)} of step {rec.step.value!r} is not what {rec.actor.user_id} signed"
        )


async def check_policy_change(session, rec: TransitionRecord) -> None:
    """A policy change applies a version the policy table holds, exactly as it holds it, by a policy admin of
    the version the household runs under, both read from PostgreSQL (the role is the users table's:
    `users.confirm_actor` ran before)."""
    from workflows import rules

    try:
        wanted = WorkflowPolicy.model_validate((rec.signed_input or {}).get("policy"))
    except ValidationError:
        raise Refusal("UnknownPolicy", "the signed policy change carries no readable policy") from None
    stored = await policy_db.stored_workflow_policy(session, wanted.version)
    if stored is None:
        raise Refusal(
            "UnknownPolicy",
            f"policy version {wanted.version!r} is not in the policy table: publish it first ('policy apply')",
        )
    if stored != wanted:
        raise Refusal(
            "PolicyMismatch",
            f"policy {wanted.version} is not the policy table's version {wanted.version} (versions are never edited)",
        )
    current = await policy_db.stored_workflow_policy(session, rec.policy_version)
    if current is None:
        raise Refusal(
            "UnknownPolicy",
            f"household {rec.household_code} runs under policy "
            f"{rec.policy_version!r}, which the policy table does not hold",
        )
    try:
        rules.check_policy_change(rec.actor, current.policy_admin_roles)
    except Refusal as v:
        raise Refusal(v.rule, f"{v.message} (policy {current.version})") from None
