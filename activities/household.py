"""Activities of the household workflow. Each is one unit of work: one session, one transaction.

Every write is keyed by the idempotency key the workflow derives from its id and the step's sequence
number; the keys are unique in PostgreSQL, so a retried activity finds its earlier result and writes
nothing twice.
"""

from __future__ import annotations

from datetime import timedelta, timezone

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from core.errors import DomainError
from db import audit, households, ledger, outbox, policy, users
from db.engine import Sessions
from models.household import STAGE_VI, Step
from models.records import MoneyOp, ReminderRecord, TransitionOutcome, TransitionRecord, money_effect

log = structlog.get_logger(__name__)
VIETNAM = timezone(timedelta(hours=7))


class HouseholdActivities:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    @activity.defn(name="record_transition")
    async def record_transition(self, rec: TransitionRecord) -> TransitionOutcome:
        try:
            async with self._sessions() as session, session.begin():
                return await self._record(session, rec)
        except DomainError as err:
            # A business refusal is an answer, not a fault: non-retryable, and logged as benign.
            raise ApplicationError(
                err.message, type=err.type, non_retryable=True, category=ApplicationErrorCategory.BENIGN
            ) from None

    @activity.defn(name="send_reminder")
    async def send_reminder(self, rec: ReminderRecord) -> bool:
        async with self._sessions() as session, session.begin():
            row = await households.get(session, rec.household_code)
            where = f"{row.district} / {row.commune}" if row else ""
            written = await outbox.enqueue(
                session,
                key=rec.idempotency_key,
                household_code=rec.household_code,
                kind="sla_reminder",
                channel="agency",
                recipient=f"{rec.agency} ({where})",
                subject=f"Nhắc hạn: hộ {rec.household_code} chờ bước {STAGE_VI[rec.stage]} đã {rec.overdue_days} ngày",
                body=(
                    f"Hộ {rec.household_code} ở bước '{STAGE_VI[rec.stage]}' từ "
                    f"{rec.entered_at.astimezone(VIETNAM):%d/%m/%Y}; quá thời hạn quy định. "
                    f"Đề nghị {rec.agency} xử lý."
                ),
            )
        log.info("sla_reminder", household=rec.household_code, stage=rec.stage.value, written=written)
        return written

    async def _record(self, session, rec: TransitionRecord) -> TransitionOutcome:
        row = await households.lock(session, rec.household_code)
        if row is None:
            raise DomainError("UnknownHousehold", f"household {rec.household_code} is not registered")

        prior = await audit.find_by_key(session, rec.idempotency_key)
        if prior is not None:
            if prior.step != rec.step.value or prior.actor_user_id != rec.actor.user_id:
                raise DomainError(
                    "IdempotencyConflict",
                    f"key {rec.idempotency_key} was recorded for step {prior.step} by {prior.actor_user_id}, "
                    f"not {rec.step.value} by {rec.actor.user_id}",
                )
            return TransitionOutcome(
                audit_id=prior.id,
                audit_hash=prior.hash,
                transfer_id=prior.transfer_id,
                amount=prior.amount,
                replayed=True,
            )
        if row.last_seq != rec.seq - 1 or row.stage != rec.from_stage.value:
            raise DomainError(
                "OutOfSequence",
                f"household {rec.household_code} is recorded at step {row.last_seq} in {row.stage}; "
                f"step {rec.seq} from {rec.from_stage.value} cannot follow it",
            )
        await users.confirm_actor(session, rec.actor)

        transfer = await self._move_money(session, rec)
        amount = transfer.amount if transfer else None
        effect = money_effect(rec.money, amount=amount, transfer_id=transfer.id if transfer else None,
                              source=rec.source, paid_before=row.paid)  # fmt: skip
        effect.pop("reservation_id", None)  # the ledger holds it; the read model does not
        entry = await audit.append(
            session,
            prev_hash=await audit.last_hash(session, rec.household_code, rec.seq - 1),
            household_code=rec.household_code,
            seq=rec.seq,
            idempotency_key=rec.idempotency_key,
            step=rec.step.value,
            from_stage=rec.from_stage.value,
            to_stage=rec.to_stage.value,
            actor_user_id=rec.actor.user_id,
            actor_role=rec.actor.role,
            actor_agency=rec.actor.agency,
            evidence=list(rec.evidence),
            reason=rec.reason,
            amount=amount,
            transfer_id=transfer.id if transfer else None,
            occurred_at=rec.at,
        )
        await self._notify(session, rec, row, amount)
        await households.record_transition(
            session,
            rec.household_code,
            stage=rec.to_stage.value,
            stage_since=rec.at,
            last_seq=rec.seq,
            **effect,
        )
        log.info(
            "transition_recorded",
            household=rec.household_code,
            step=rec.step.value,
            seq=rec.seq,
            to_stage=rec.to_stage.value,
            amount=amount,
        )
        return TransitionOutcome(
            audit_id=entry.id, audit_hash=entry.hash, transfer_id=transfer.id if transfer else None, amount=amount
        )

    async def _move_money(self, session, rec: TransitionRecord) -> ledger.Transfer | None:
        memo = f"{rec.step.value} {rec.household_code} by {rec.actor.user_id}"
        key = f"{rec.idempotency_key}:{rec.money.value}"
        if rec.money is MoneyOp.RESERVE:
            if not rec.source:
                raise DomainError("FundingSourceMissing", "fund allocation must name a funding source")
            amount = await policy.entitlement(
                session, rec.support_type, rec.beneficiary_group, rec.at.astimezone(VIETNAM).date()
            )
            return await ledger.reserve(
                session, key=key, source=rec.source, household_code=rec.household_code, amount=amount, memo=memo
            )
        if rec.money in (MoneyOp.POST, MoneyOp.VOID):
            if rec.reservation_id is None:
                raise DomainError("UnknownReservation", f"household {rec.household_code} holds no reservation")
            resolve = ledger.post if rec.money is MoneyOp.POST else ledger.void
            return await resolve(session, key=key, pending_id=rec.reservation_id, memo=memo)
        return None

    async def _notify(self, session, rec: TransitionRecord, row: households.HouseholdRow, amount: int | None) -> None:
        where = f"{row.district} / {row.commune}"
        if rec.next_agency and not rec.to_stage.terminal:
            await outbox.enqueue(
                session,
                key=f"{rec.idempotency_key}:task",
                household_code=rec.household_code,
                kind="task",
                channel="agency",
                recipient=f"{rec.next_agency} ({where})",
                subject=f"Hộ {rec.household_code}: chờ bước {STAGE_VI[rec.to_stage]}",
                body=(
                    f"Hộ {rec.household_code} ({where}) đã qua bước '{STAGE_VI[rec.from_stage]}' "
                    f"({rec.actor.user_id}, {rec.actor.agency}); đề nghị thực hiện bước '{STAGE_VI[rec.to_stage]}'."
                ),
            )
        # The household hears of what touches its money or its file.
        household_news = {
            Step.ALLOCATE: f"Hộ được bố trí {amount or 0:,} đồng hỗ trợ; có thể khởi công.",
            Step.SETTLE: f"Hộ đã được thanh toán {amount or 0:,} đồng hỗ trợ. Hồ sơ đã hoàn thành.",
            Step.CANCEL: f"Hồ sơ hỗ trợ nhà ở của hộ đã bị hủy. Lý do: {rec.reason}",
        }
        if rec.step in household_news:
            await outbox.enqueue(
                session,
                key=f"{rec.idempotency_key}:household",
                household_code=rec.household_code,
                kind="household",
                channel="sms",
                recipient=f"household:{rec.household_code}",
                subject=f"Hỗ trợ nhà ở - hộ {rec.household_code}",
                body=household_news[rec.step],
            )
