"""The payment channel's answers are recorded only as the channel signed them.

A payment_confirmed / payment_failed step carries the channel's assertion and the answer's JSON it covers
(`signed_input`). Before such a step is written, `verify_channel_record` checks, against PostgreSQL: the key
is a `channel` key registered in `signing_keys` and valid when the answer was issued; the signature covers
exactly this answer, for this household's workflow, the step the answer's state names and the channel's
system user who records it; the answer is for this payment; and a confirmation is for the amount and payee
the engine instructed. So neither an activity completed by hand nor a workflow's own copy can post a tranche
as paid without the bank having said so.
"""

from __future__ import annotations

from datetime import datetime

from core.errors import Refusal
from core.signing import TrustedKeys, Unauthenticated
from db import finance as finance_db
from db import signing_keys
from models.assertion import CHANNEL, ActionAssertion, digest_of
from models.finance import FINAL_STATES, answer_step
from models.household import CHANNEL_STEPS, Step
from models.records import TransitionRecord

RULE = "Unauthenticated"


def _refuse(rec: TransitionRecord, why: str) -> Refusal:
    return Refusal(RULE, f"{rec.step.value} of {rec.payment_id} for household {rec.household_code}: {why}")


async def verify_channel_record(session, rec: TransitionRecord, *, now: datetime | None = None) -> None:
    """Refuse (`Unauthenticated`) a channel step the channel did not sign as recorded, with the key and the
    instruction PostgreSQL holds (`check_channel_answer`). With `now`, also an answer not valid at `now` (when
    it is asked); without, the signature is judged at its issue (a restore re-records an answer signed long
    ago)."""
    if rec.step not in CHANNEL_STEPS:
        raise _refuse(rec, "not a payment channel's step")
    a, answer = rec.assertion, rec.signed_input
    if a is None or answer is None:
        raise _refuse(rec, "the channel's answer carries no signature: only an answer the bank signed is recorded")
    keys = await signing_keys.trusted_for(session, a.key_id)
    if a.key_id not in keys.keys:
        raise _refuse(rec, f"signed by key {a.key_id!r}, which is not registered")
    sent = await finance_db.instruction_terms(session, rec.payment_id)
    if sent is None:
        raise _refuse(rec, "the engine recorded no such instruction")
    try:
        check_channel_answer(
            keys,
            a,
            answer,
            step=rec.step,
            workflow_id=rec.workflow_id,
            user_id=rec.actor.user_id,
            evidence=rec.evidence,
            payment_id=rec.payment_id,
            tranche=rec.tranche,
            sent=sent,
            now=now,
        )
    except Unauthenticated as err:
        raise _refuse(rec, err.message) from None


def check_channel_answer(
    keys: TrustedKeys,
    a: ActionAssertion,
    answer: dict,
    *,
    step: Step,
    workflow_id: str,
    user_id: str,
    evidence: list[str],
    payment_id: str | None = None,
    tranche: int | None = None,
    sent: tuple[int, str] | None = None,
    now: datetime | None = None,
) -> None:
    """A payment_confirmed / payment_failed step as the channel signed it: a channel key valid when issued,
    over exactly `answer`, for this workflow, the step the answer's final state names and the channel's user;
    for this payment and tranche (when known); a confirmation only for the terms the engine `sent` (when
    known) with its bank reference as evidence, a failure only if the channel said so or confirmed other
    terms. Raises Unauthenticated naming the rule. The one home of this check: the recording activity and
    `audit verify` call it."""
    state = answer.get("state")
    if state not in FINAL_STATES:
        raise Unauthenticated(f"the signed answer says {state!r}, not a final state")
    keys.verify(
        a,
        workflow_id=workflow_id,
        step=answer_step(state),
        input_digest=digest_of(answer),
        user_id=user_id,
        holder=CHANNEL,
        now=now or a.issued_at,
        check_expiry=now is not None,
    )
    if payment_id is not None and answer.get("payment_id") != payment_id:
        raise Unauthenticated(f"the signed answer is for {answer.get('payment_id')!r}, the step for {payment_id!r}")
    if tranche is not None and answer.get("tranche") is not None and answer["tranche"] != tranche:
        raise Unauthenticated(f"the signed answer is for tranche {answer['tranche']}, not {tranche}")
    as_sent = sent is None or (answer.get("amount"), answer.get("payee")) == sent
    if step is Step.PAYMENT_CONFIRMED:
        if state != "confirmed" or not as_sent:
            raise Unauthenticated(
                f"the signed answer says {state} for amount {answer.get('amount')!r} and "
                "another or the same payee: a confirmation counts only for the terms sent"
            )
        if list(evidence) != [answer.get("bank_ref") or answer.get("payment_id")]:
            raise Unauthenticated("the step's evidence is not the bank reference the channel signed")
    elif state != "failed" and as_sent and sent is not None:
        # A failure is what the channel said, or a confirmation for other terms than the engine sent.
        raise Unauthenticated("the channel signed a confirmation of the terms sent, not a failure")
