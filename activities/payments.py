"""Activities of the payment channel: send an instruction, ask for its status, escalate a late one."""

from __future__ import annotations

import structlog
from temporalio import activity

from db import finance as finance_db
from db import households, outbox, users
from db.engine import Sessions
from finance.channel import PaymentChannel
from models.finance import EscalationRecord, PaymentCheck, PaymentInstruction

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
        await self._channel.submit(instr)
        log.info("payment_submitted", payment_id=instr.payment_id, amount=instr.amount, new=new)
        return new

    @activity.defn(name="check_payment")
    async def check_payment(self, payment_id: str) -> PaymentCheck:
        status = await self._channel.status(payment_id)
        async with self._sessions() as session:
            return PaymentCheck(status=status, channel_actor=await users.require_actor(session, self._channel_user))

    @activity.defn(name="escalate_payment")
    async def escalate_payment(self, rec: EscalationRecord) -> PaymentCheck:
        """A payment is late: ask the channel; if it never received the instruction, send the same one
        again (same id: it cannot be paid twice); tell Finance."""
        instr = rec.instruction
        status = await self._channel.status(instr.payment_id)
        if status.state == "unknown":
            await self._channel.submit(instr)
        async with self._sessions() as session, session.begin():
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
