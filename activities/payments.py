"""Activities of the payment channel: send an instruction, ask for its status and record the answer, escalate
a late one.

Nothing here takes the caller's word for money. An instruction is built from PostgreSQL for a release
recorded there (`submit_payment` takes only the payment id); a final answer is recorded only as the bank
signed it (activities/channel_answers.py), asked and recorded in one local activity (`settle_answer`): a
local activity runs inside the household's workflow task, so nobody can complete it by hand through the
server.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from core import metrics
from core.errors import Refusal
from core.formatting import dong, place
from db import audit, households, outbox, users
from db import finance as finance_db
from db.engine import Sessions
from finance.channel import InstructionConflict, PaymentChannel
from models.actor import Actor
from models.assertion import ActionAssertion
from models.finance import (
    FINAL_STATES,
    ChannelStatus,
    EscalationRecord,
    PaymentCheck,
    PaymentInstruction,
    PaymentRequest,
    SettleRequest,
    TrancheStatus,
    failure_reason,
)
from models.household import Step
from models.records import MoneyOp, SettledAnswer, TransitionRecord

log = structlog.get_logger(__name__)


def _same_terms(req: PaymentRequest, instr: PaymentInstruction) -> None:
    """Refuse (`InstructionMismatch`) an instruction whose amount or payee in PostgreSQL is not the workflow's."""
    differs = [
        name
        for name, mine, stored in (("amount", req.amount, instr.amount), ("payee", req.payee, instr.payee))
        if mine is not None and mine != stored
    ]
    if differs:
        log.error("payment_refused", payment_id=req.payment_id, rule="InstructionMismatch", fields=differs)
        raise ApplicationError(
            f"{req.payment_id}: the {' and '.join(differs)} in PostgreSQL differ from the household's workflow: "
            "not sent",
            type="InstructionMismatch",
            non_retryable=True,
        )


class PaymentActivities:
    def __init__(self, sessions: Sessions, channel: PaymentChannel, channel_user: str, record=None) -> None:
        """`record` is the step's one write (`HouseholdActivities._record(session, rec)`), used by
        `settle_answer` to record the channel's answer in the transaction that verified it."""
        self._sessions = sessions
        self._channel = channel
        self._channel_user = channel_user
        self._record = record

    @activity.defn(name="submit_payment")
    async def submit_payment(self, req: PaymentRequest) -> PaymentInstruction:
        """Build the instruction from PostgreSQL for a recorded release, record it (once, by its id), then
        hand it to the channel, which pays an id once. Returns what was sent (a local activity's marker keeps
        it: the auditors read the instruction from there)."""
        async with self._sessions() as session, session.begin():
            instr = await self._released(session, req.payment_id, req.household_code)
            _same_terms(req, instr)
            new = await finance_db.save_instruction(session, instr, self._channel.name)
        await self._send(instr)
        if new:
            metrics.payment("released")
        log.info("payment_submitted", payment_id=instr.payment_id, amount=instr.amount, new=new)
        return instr

    @activity.defn(name="check_payment")
    async def check_payment(self, payment_id: str) -> PaymentCheck:
        """The channel's answer, its signature passed along (histories before `settle_answer`: the workflow
        records it through record_transition, which verifies that signature)."""
        status = await self._channel.status(payment_id)
        async with self._sessions() as session:
            return PaymentCheck(
                status=await self._as_sent(session, status),
                channel_actor=await users.require_actor(session, self._channel_user),
            )

    @activity.defn(name="settle_answer")
    async def settle_answer(self, req: SettleRequest) -> SettledAnswer:
        """Ask the channel about one instruction; a final answer is verified and its step recorded in one
        transaction. Runs only as the household workflow's local activity."""
        if not (activity.in_activity() and activity.info().is_local) or self._record is None:
            raise ApplicationError(
                "settle_answer runs only as the household workflow's local activity",
                type="Unauthenticated",
                non_retryable=True,
            )
        status = await self._channel.status(req.payment_id)
        if status.state not in FINAL_STATES:
            return SettledAnswer(status=status)
        rec = None
        try:
            async with self._sessions() as session, session.begin():
                status = await self._as_sent(session, status)
                rec = answer_record(req, status, await users.require_actor(session, self._channel_user))
                outcome = await self._record(session, rec, asked_at=datetime.now(UTC))  # fresh when asked
                if outcome.replayed:
                    # A retry after the first attempt committed (a crash before its marker): the channel signed
                    # this answer afresh, but the step is the one recorded. The history must carry the answer
                    # and signature the audit row keeps, or the three records disagree (assertion_differs).
                    status, rec = await self._as_recorded(session, outcome.audit_id, status, rec)
        except Refusal as err:
            # Refused (a forged, stale or foreign answer, a step that holds this number): nothing is recorded;
            # the record goes with the refusal so the history says what was refused.
            log.warning("payment_answer_refused", payment_id=req.payment_id, rule=err.rule, error=err.message)
            metrics.refused(err.rule, "engine")
            raise ApplicationError(
                err.message,
                *([rec] if rec else []),
                type=err.rule,
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        log.info("payment_answer_recorded", payment_id=req.payment_id, state=status.state, seq=req.seq)
        if not outcome.replayed:
            metrics.step_recorded(rec.step.value)
            metrics.payment(str(status.state))
        return SettledAnswer(
            status=status, outcome=outcome.model_copy(update={"record": rec.model_copy(update={"at": outcome.at})})
        )

    async def _as_recorded(
        self, session, audit_id: int, status: ChannelStatus, rec: TransitionRecord
    ) -> tuple[ChannelStatus, TransitionRecord]:
        """The answer and the record as the committed audit row has them: its assertion and signed answer."""
        row = await audit.row_by_id(session, audit_id)
        assertion = ActionAssertion.model_validate(row["assertion"]) if row["assertion"] else None
        signed = row["signed_input"]
        return (
            status.model_copy(update={"assertion": assertion, "answer": signed}),
            rec.model_copy(update={"assertion": assertion, "signed_input": signed}),
        )

    async def _released(self, session, payment_id: str, household_code: str) -> PaymentInstruction:
        try:
            return await finance_db.released_instruction(session, payment_id, household_code)
        except Refusal as err:
            log.error("payment_refused", payment_id=payment_id, rule=err.rule, error=err.message)
            raise err.application_error() from None

    async def _send(self, instr: PaymentInstruction) -> None:
        try:
            await self._channel.submit(instr)
        except InstructionConflict as err:
            # Asking again cannot help: the channel holds this id with other terms. The inquiry records
            # it as failed (_as_sent), and the tranche is sent again under a new attempt or returned.
            raise ApplicationError(str(err), type="InstructionConflict", non_retryable=True) from None

    async def _as_sent(self, session, status: ChannelStatus) -> ChannelStatus:
        """The channel's answer, unless the channel holds the id with other terms than the engine sent (an
        instruction forged under a predictable id, say): then a failure naming what differs, never a
        payment recorded for another amount or payee. The channel's signature stays with it: a failure
        is recorded on a signed answer whose terms differ (activities/channel_answers.py)."""
        held = (status.amount, status.payee)
        if status.state not in FINAL_STATES or None in held:
            return status
        sent = await finance_db.instruction_terms(session, status.payment_id)
        if sent is None or sent == held:
            return status
        differs = [name for name, a, b in zip(("amount", "payee"), sent, held, strict=True) if a != b]
        log.error("payment_terms_differ", payment_id=status.payment_id, fields=differs, channel_state=status.state)
        reason = (
            f"the channel holds {status.payment_id} with another {' and '.join(differs)} than the engine "
            f"sent (its answer: {status.state}): not recorded as paid"
        )
        return ChannelStatus(
            payment_id=status.payment_id,
            state="failed",
            reason=reason,
            assertion=status.assertion,
            answer=status.answer,
        )

    @activity.defn(name="escalate_payment")
    async def escalate_payment(self, rec: EscalationRecord) -> PaymentCheck:
        """A payment is late: ask the channel; if it never received the instruction, send it again as
        PostgreSQL has it (same id: it cannot be paid twice); tell Finance."""
        named = rec.instruction
        if not activity.in_activity() or activity.info().attempt == 1:  # once per escalation, not per retry
            metrics.payment("escalated")
        async with self._sessions() as session:
            try:
                instr = await finance_db.released_instruction(session, named.payment_id, named.household_code)
            except Refusal as err:  # Finance is told all the same; nothing is sent
                log.error("payment_refused", payment_id=named.payment_id, rule=err.rule, error=err.message)
                instr = None
        try:
            status = await self._channel.status(named.payment_id)
        except (httpx.TransportError, httpx.HTTPStatusError) as err:
            # The channel cannot be asked now: Finance is told all the same, the household's steps are not
            # held up behind a channel that is down, and the next escalation asks again.
            log.warning("channel_unreachable", payment_id=named.payment_id, error=repr(err))
            said = f"the payment channel could not be reached ({type(err).__name__})"
            status = ChannelStatus(payment_id=named.payment_id, state="pending", reason=said)
        if status.state == "unknown" and instr is not None:
            async with self._sessions() as session, session.begin():
                await finance_db.save_instruction(session, instr, self._channel.name)
            await self._send(instr)
        amount = instr.amount if instr else named.amount
        async with self._sessions() as session, session.begin():
            status = await self._as_sent(session, status)
            channel_actor = await users.require_actor(session, self._channel_user)
            await finance_db.mark_overdue(session, named.payment_id)
            row = await households.get(session, named.household_code)
            where = place(row.district, row.commune) if row else ""
            await outbox.enqueue(
                session,
                key=f"{named.payment_id}#escalation{rec.escalation}",
                household_code=named.household_code,
                kind="payment_overdue",
                channel="agency",
                recipient=f"{rec.finance_agency} ({where})",
                subject=f"Chưa xác nhận chuyển tiền: hộ {named.household_code}, đợt {named.tranche}",
                body=(
                    f"Lệnh chi {named.payment_id} ({dong(amount)}) chưa được kênh thanh toán xác nhận sau "
                    f"{rec.overdue_hours} giờ; kênh trả lời: {status.reason or status.state}. Đề nghị kiểm tra với "
                    "ngân hàng/Kho bạc."
                ),
            )
        log.warning("payment_escalated", payment_id=named.payment_id, channel_state=status.state, n=rec.escalation)
        return PaymentCheck(status=status, channel_actor=channel_actor)


def answer_record(req: SettleRequest, status: ChannelStatus, actor: Actor) -> TransitionRecord:
    """The step a final answer records: a confirmation posts the tranche's pieces; a failure sends it again
    (`req.retry`) or returns it to Finance. The channel's assertion and signed answer go with it."""
    confirmed = status.state == "confirmed"
    n = req.tranche
    after = TrancheStatus.PAID if confirmed else TrancheStatus.RELEASED if req.retry else TrancheStatus.DUE
    return TransitionRecord(
        idempotency_key=f"{req.workflow_id}#{req.seq}",
        workflow_id=req.workflow_id,
        household_code=req.household_code,
        seq=req.seq,
        step=Step.PAYMENT_CONFIRMED if confirmed else Step.PAYMENT_FAILED,
        from_stage=req.stage,
        to_stage=req.stage,
        at=req.at,
        actor=actor,
        evidence=[status.bank_ref or status.payment_id] if confirmed else [],
        reason=None if confirmed else failure_reason(status.reason, req.attempts, req.retry),
        money=MoneyOp.POST if confirmed else MoneyOp.NONE,
        transfer_ids=list(req.transfer_ids) if confirmed else [],
        tranche=n,
        tranche_updates={n: after.value},
        payment_id=req.payment_id,
        support_type=req.support_type,
        beneficiary_group=req.beneficiary_group,
        next_agency=None if confirmed or req.retry else req.finance_agency,
        assertion=status.assertion,
        signed_input=status.answer,
    )
