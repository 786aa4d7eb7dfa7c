"""Activities of the payment channel: send an instruction, ask for its status, escalate a late one."""

from __future__ import annotations

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import finance as finance_db
from db import households, outbox, users
from db.engine import Sessions
from finance.channel import InstructionConflict, PaymentChannel
from models.finance import ChannelStatus, EscalationRecord, PaymentCheck, PaymentInstruction

log = structlog.get_logger(__name__)


class PaymentActivities:
    def __init__(self, sessions: Sessions, channel: PaymentChannel, channel_user: str) -> None:
        self._sessions = sessions
        self._channel = channel
        self._channel_user = channel_user

    @activity.defn(name="submit_payment")
    async def submit_payment(self, instr: PaymentInstruction) -> bool:
        """Record the instruction (once, by its id), then hand it to the channel, which pays an id once."""
        async with self._sessions() as session, session.begin():
            new = await finance_db.save_instruction(session, instr, self._channel.name)
        await self._send(instr)
        log.info("payment_submitted", payment_id=instr.payment_id, amount=instr.amount, new=new)
        return new

    @activity.defn(name="check_payment")
    async def check_payment(self, payment_id: str) -> PaymentCheck:
        status = await self._channel.status(payment_id)
        async with self._sessions() as session:
            return PaymentCheck(status=await self._as_sent(session, status),
                                channel_actor=await users.require_actor(session, self._channel_user))  # fmt: skip

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
        payment recorded for another amount or payee."""
        held = (status.amount, status.payee)
        if status.state not in ("confirmed", "failed") or None in held:
            return status
        sent = await finance_db.instruction_terms(session, status.payment_id)
        if sent is None or sent == held:
            return status
        differs = [name for name, a, b in zip(("amount", "payee"), sent, held, strict=True) if a != b]
        log.error("payment_terms_differ", payment_id=status.payment_id, fields=differs, channel_state=status.state)
        reason = (f"the channel holds {status.payment_id} with another {' and '.join(differs)} than the engine "
                  f"sent (its answer: {status.state}): not recorded as paid")  # fmt: skip
        return ChannelStatus(payment_id=status.payment_id, state="failed", reason=reason)

    @activity.defn(name="escalate_payment")
    async def escalate_payment(self, rec: EscalationRecord) -> PaymentCheck:
        """A payment is late: ask the channel; if it never received the instruction, send the same one
        again (same id: it cannot be paid twice); tell Finance."""
        instr = rec.instruction
        status = await self._channel.status(instr.payment_id)
        if status.state == "unknown":
            await self._send(instr)
        async with self._sessions() as session, session.begin():
            status = await self._as_sent(session, status)
            channel_actor = await users.require_actor(session, self._channel_user)
            await finance_db.mark_overdue(session, instr.payment_id)
            row = await households.get(session, instr.household_code)
            where = f"{row.district} / {row.commune}" if row else ""
            await outbox.enqueue(
                session,
                key=f"{instr.payment_id}#escalation{rec.escalation}",
                household_code=instr.household_code,
                kind="payment_overdue",
                channel="agency",
                recipient=f"{rec.finance_agency} ({where})",
                subject=f"Chưa xác nhận chuyển tiền: hộ {instr.household_code}, đợt {instr.tranche}",
                body=(
                    f"Lệnh chi {instr.payment_id} ({instr.amount:,} đồng) chưa được kênh thanh toán xác nhận sau "
                    f"{rec.overdue_hours} giờ; kênh trả lời: {status.state}. Đề nghị kiểm tra với ngân hàng/Kho bạc."
                ),
            )
        log.warning("payment_escalated", payment_id=instr.payment_id, channel_state=status.state, n=rec.escalation)
        return PaymentCheck(status=status, channel_actor=channel_actor)
