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

from core.errors import DomainError
from core.signing import TrustedKeys, Unauthenticated
from db import finance as finance_db
from db import signing_keys
from models.assertion import CHANNEL, digest_of
from models.finance import FINAL_STATES, answer_step
from models.household import CHANNEL_STEPS, Step
from models.records import TransitionRecord

RULE = "Unauthenticated"


def _refuse(rec: TransitionRecord, why: str) -> DomainError:
    return DomainError(RULE, f"{rec.step.value} of {rec.payment_id} for household {rec.household_code}: {why}")


async def verify_channel_record(session, rec: TransitionRecord, *, now: datetime | None = None) -> None:
    """Refuse (`Unauthenticated`) a channel step the channel did not sign as recorded. With `now`, also an
    answer not valid at `now` (when it is asked); without, the signature is judged at its issue (a restore
    re-records an answer signed long ago)."""
    if rec.step not in CHANNEL_STEPS:
        raise _refuse(rec, "not a payment channel's step")
    a, answer = rec.assertion, rec.signed_input
    if a is None or answer is None:
        raise _refuse(rec, "the channel's answer carries no signature: only an answer the bank signed is recorded")
    key = await signing_keys.get(session, a.key_id)
    if key is None:
        raise _refuse(rec, f"signed by key {a.key_id!r}, which is not registered")
    state = answer.get("state")
    if state not in FINAL_STATES:
        raise _refuse(rec, f"the signed answer says {state!r}, not a final state")
    try:
        TrustedKeys.of([key]).verify(a, workflow_id=rec.workflow_id, step=answer_step(state),
                                     input_digest=digest_of(answer), user_id=rec.actor.user_id, holder=CHANNEL,
                                     now=now or a.issued_at, check_expiry=now is not None)  # fmt: skip
    except Unauthenticated as err:
        raise _refuse(rec, err.message) from None
    if answer.get("payment_id") != rec.payment_id:
        raise _refuse(rec, f"the signed answer is for {answer.get('payment_id')!r}")
    if answer.get("tranche") is not None and answer["tranche"] != rec.tranche:
        raise _refuse(rec, f"the signed answer is for tranche {answer['tranche']}, not {rec.tranche}")
    sent = await finance_db.instruction_terms(session, rec.payment_id)
    if sent is None:
        raise _refuse(rec, "the engine recorded no such instruction")
    as_sent = (answer.get("amount"), answer.get("payee")) == sent
    if rec.step is Step.PAYMENT_CONFIRMED:
        if state != "confirmed" or not as_sent:
            raise _refuse(rec, f"the signed answer says {state} for amount {answer.get('amount')!r} and another or "
                               "the same payee; a confirmation counts only for the terms the engine sent")  # fmt: skip
        if list(rec.evidence) != [answer.get("bank_ref") or rec.payment_id]:
            raise _refuse(rec, "the step's evidence is not the bank reference the channel signed")
    elif state != "failed" and as_sent:
        # A failure is what the channel said, or a confirmation for other terms than the engine sent.
        raise _refuse(rec, "the channel signed a confirmation of the terms sent, not a failure")
