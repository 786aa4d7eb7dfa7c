"""Activities of the household workflow. Each is one unit of work: one session, one transaction.

Every write is keyed by the idempotency key the workflow derives from its id and the step's sequence
number; the keys are unique in PostgreSQL, so a retried activity finds its earlier result and writes
nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities import channel_answers, moves, officer_steps, review_checks
from core import metrics
from core.errors import Refusal
from core.formatting import VIETNAM, day, dong, place
from db import audit, households, ledger, outbox, policy, restores, steps, users
from db import finance as finance_db
from db import review as review_db
from db.engine import Sessions
from finance.allocation import covers, eligible, from_one_source, plan_allocation, split_into_tranches
from models.allocation import SourceView
from models.assertion import ActionAssertion
from models.finance import AllocationPiece, Piece
from models.household import CHANNEL_STEPS, PAYOUT_STEPS, Step, SupportType
from models.records import MoneyOp, ReminderRecord, TransitionOutcome, TransitionRecord, money_effect
from models.vocabulary import stage_name

log = structlog.get_logger(__name__)


class HouseholdActivities:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    @activity.defn(name="record_transition")
    async def record_transition(self, rec: TransitionRecord) -> TransitionOutcome:
        """Write the step. Run as a local activity, the history keeps only its answer, so the answer carries
        the record: the outcome as `record`, a refusal as its details."""
        local = activity.in_activity() and activity.info().is_local
        try:
            async with self._sessions() as session, session.begin():
                outcome = await self._record(session, rec)
        except Refusal as err:
            # A business refusal is an answer, not a fault: non-retryable, and logged as benign.
            metrics.refused(err.rule, "engine")
            raise ApplicationError(
                err.message,
                *([rec] if local else []),
                type=err.rule,
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        except Exception:
            # Not a refusal: retried (a database outage, a bug). Logged here, where the step is named.
            log.exception("transition_failed", household=rec.household_code, step=rec.step.value, seq=rec.seq)
            raise
        if not outcome.replayed:
            metrics.step_recorded(rec.step.value)
        if not local:
            return outcome
        # The history keeps what the database committed: a retry's record carries the first attempt's time and,
        # when another signed input asked again (a move mended by a reorganisation signed anew), the assertion
        # and signed input the audit row keeps, so the history and the audit log name the same signature.
        update: dict = {"at": outcome.at}
        if outcome.replayed:
            async with self._sessions() as session:
                row = await audit.row_by_id(session, outcome.audit_id)
            update |= {
                "assertion": ActionAssertion.model_validate(row["assertion"]) if row["assertion"] else None,
                "signed_input": row["signed_input"],
            }
        return outcome.model_copy(update={"record": rec.model_copy(update=update)})

    @activity.defn(name="send_reminder")
    async def send_reminder(self, rec: ReminderRecord) -> bool:
        async with self._sessions() as session, session.begin():
            row = await households.get(session, rec.household_code)
            where = place(row.district, row.commune) if row else ""
            written = await outbox.enqueue(
                session,
                key=rec.idempotency_key,
                household_code=rec.household_code,
                kind="sla_reminder",
                channel="agency",
                recipient=f"{rec.agency} ({where})",
                subject=(
                    f"Nhắc hạn: hộ {rec.household_code} chờ bước {stage_name(rec.stage)} đã {rec.overdue_days} ngày"
                ),
                body=(
                    f"Hộ {rec.household_code} ở bước '{stage_name(rec.stage)}' từ "
                    f"{day(rec.entered_at)}; quá thời hạn quy định. "
                    f"Đề nghị {rec.agency} xử lý."
                ),
            )
        log.info("sla_reminder", household=rec.household_code, stage=rec.stage.value, written=written)
        return written

    async def _record(
        self, session, rec: TransitionRecord, *, restoring: bool = False, asked_at: datetime | None = None
    ) -> TransitionOutcome:
        """Write one step in the caller's transaction. Before anything is written: the caller is the household's
        own workflow, the record's household is the registered one, the actor is the users table's, and the
        step is signed as it will be written (activities/officer_steps.py; the channel's answers:
        activities/channel_answers.py). `restoring`: `audit restore` re-records a step from its history, which
        has no assertion if it was taken before signed actions. `asked_at`: a channel answer just asked is
        judged fresh at that time too (settle_answer); otherwise at its issue."""
        officer_steps.check_caller(rec)
        row = await households.lock(session, rec.household_code)
        if row is None:
            raise Refusal("UnknownHousehold", f"household {rec.household_code} is not registered")

        prior, link = await audit.prior_and_link(session, rec.idempotency_key, rec.household_code, rec.seq)
        if prior is not None:
            if prior.step != rec.step.value or prior.actor_user_id != rec.actor.user_id:
                raise Refusal(
                    "IdempotencyConflict",
                    f"key {rec.idempotency_key} was recorded for step {prior.step} by {prior.actor_user_id}, "
                    f"not {rec.step.value} by {rec.actor.user_id}",
                )
            # A retry must hand the workflow what the first attempt did, tranches included.
            allocation, sources, adjusted = [], None, {}
            if rec.money is MoneyOp.RESERVE and rec.plan_tranches:
                allocation, sources = await finance_db.allocation_recorded(
                    session, rec.household_code, f"{rec.idempotency_key}:{rec.money.value}:"
                )
            if rec.money is MoneyOp.ADJUST:  # the voids and the new reservations the first attempt wrote
                allocation, adjusted = await self._adjusted(session, rec, row)
            return TransitionOutcome(
                audit_id=prior.id,
                audit_hash=prior.hash,
                transfer_id=prior.transfer_id,
                amount=prior.amount,
                at=prior.occurred_at,
                replayed=True,
                allocation=allocation,
                sources=sources,
                **adjusted,
                **(await self._retried_move(session, rec, prior.id) if rec.step is Step.MOVE else {}),
            )
        if row.last_seq != rec.seq - 1 or row.stage != rec.from_stage.value:
            raise Refusal(
                "OutOfSequence",
                f"household {rec.household_code} is recorded at step {row.last_seq} in {row.stage}; "
                f"step {rec.seq} from {rec.from_stage.value} cannot follow it",
            )
        officer_steps.check_household(rec, row)
        await users.confirm_actor(session, rec.actor)
        await moves.check_actor_unit(session, rec)
        await self._authenticate(session, rec, row, restoring=restoring, asked_at=asked_at)
        move = await moves.check_move(session, rec, row) if rec.step is Step.MOVE else None
        change = await review_checks.before_writing(session, rec, row)

        moved = await self._move_money(session, rec, row, change)
        transfer = moved.first
        amount = moved.amount
        effect = money_effect(
            rec.money,
            amount=amount,
            source=moved.sources or rec.source,
            reserved_before=row.reserved,
            paid_before=row.paid,
            released=moved.released,
            entitlement=moved.entitlement,
        )
        await self._update_payouts(session, rec)
        try:
            entry = await steps.write(
                session,
                prev_hash=link,
                audit={
                    "household_code": rec.household_code,
                    "seq": rec.seq,
                    "idempotency_key": rec.idempotency_key,
                    "step": rec.step.value,
                    "from_stage": rec.from_stage.value,
                    "to_stage": rec.to_stage.value,
                    "actor_user_id": rec.actor.user_id,
                    "actor_role": rec.actor.role,
                    "actor_agency": rec.actor.agency,
                    "evidence": list(rec.evidence),
                    "reason": rec.reason,
                    "amount": amount,
                    "transfer_id": transfer.id if transfer else None,
                    "occurred_at": rec.at,
                    # The assertion and the input it covers, kept (and hashed) with the row: an auditor verifies them.
                    "assertion": rec.assertion.model_dump(mode="json") if rec.assertion else None,
                    "signed_input": rec.signed_input,
                },
                messages=self._messages(rec, row, amount),
                register={
                    "stage": rec.to_stage.value,
                    "last_seq": rec.seq,
                    **({"stage_since": rec.at} if rec.to_stage != rec.from_stage else {}),
                    **effect,
                    **(move.register(rec.at) if move else {}),
                },
            )
        except steps.AssertionReused:
            # The unique index: one assertion takes one step per household (a copied one is refused here too).
            raise Refusal(
                officer_steps.RULE, f"household {rec.household_code}: the step's assertion was used before"
            ) from None
        await review_checks.after_writing(session, rec, row, change, entry.id)
        log.info(
            "transition_recorded",
            household=rec.household_code,
            step=rec.step.value,
            seq=rec.seq,
            to_stage=rec.to_stage.value,
            amount=amount,
        )
        return TransitionOutcome(
            audit_id=entry.id,
            audit_hash=entry.hash,
            transfer_id=transfer.id if transfer else None,
            amount=amount,
            allocation=moved.allocation,
            sources=moved.sources,
            released=moved.released,
            entitlement=moved.entitlement,
            at=rec.at,
            **({"policy": move.policy, "moved_to": move.commune, "moved_district": move.district} if move else {}),
        )

    async def _retried_move(self, session, rec: TransitionRecord, prior_id: int) -> dict:
        move = await moves.recorded_move(session, prior_id, await households.get(session, rec.household_code))
        return {"policy": move.policy, "moved_to": move.commune, "moved_district": move.district}

    async def _authenticate(
        self, session, rec: TransitionRecord, row, *, restoring: bool, asked_at: datetime | None
    ) -> None:
        if restoring and rec.assertion is None and rec.signed_input is None:
            # Its history recorded it before steps were signed: written again as it was, but only if no
            # earlier step of this household was signed (a history planted after signing began is not).
            if await audit.signed_before(session, rec.household_code, rec.seq):
                raise Refusal(
                    "Unauthenticated",
                    f"step {rec.seq} of {rec.household_code} carries no assertion, "
                    "but earlier steps of this household are signed: not restored",
                )
            return
        if rec.step in CHANNEL_STEPS:
            await channel_answers.verify_channel_record(session, rec, now=asked_at)
            return
        await officer_steps.verify_officer_record(session, rec, row)
        if rec.assertion.step.startswith("payout_batch:") and not restoring:
            # The batch's one assertion rides on every household's step: only the batch's own run may use it,
            # household by household (its ticket), not an update copied from another household's history.
            batch_action = rec.assertion.step.partition(":")[2]
            if not await finance_db.has_batch_ticket(
                session, rec.assertion.nonce, rec.household_code, rec.tranche or 0, batch_action
            ):
                raise Refusal(
                    "Unauthenticated",
                    f"household {rec.household_code} holds no ticket of the "
                    "batch this step is signed for: only the batch's run takes its steps",
                )
        if rec.step is Step.SET_POLICY:
            await officer_steps.check_policy_change(session, rec)

    async def _move_money(self, session, rec: TransitionRecord, row=None, change=None) -> _Moved:
        memo = f"{rec.step.value} {rec.household_code} by {rec.actor.user_id}"
        key = f"{rec.idempotency_key}:{rec.money.value}"
        if rec.money is MoneyOp.ADJUST:
            return await self._adjust(session, rec, row, change, key, memo)
        if rec.money is MoneyOp.RESERVE:
            as_of = rec.at.astimezone(VIETNAM).date()
            amount = await policy.entitlement(session, rec.support_type, rec.beneficiary_group, as_of)
            if rec.plan_tranches:
                return await self._allocate(session, rec, amount, as_of, key, memo)
            if not rec.source:
                raise Refusal("FundingSourceMissing", "fund allocation must name a funding source")
            t = await ledger.reserve(
                session, key=key, source=rec.source, household_code=rec.household_code, amount=amount, memo=memo
            )
            return _Moved([t], t.amount, sources=rec.source)
        if rec.money in (MoneyOp.POST, MoneyOp.VOID):
            pending = rec.transfer_ids or ([rec.reservation_id] if rec.reservation_id is not None else [])
            pending = await restores.current_ids(session, rec.household_code, pending) if pending else pending
            if not pending:
                raise Refusal("UnknownReservation", f"household {rec.household_code} holds no reservation")
            resolve = ledger.post if rec.money is MoneyOp.POST else ledger.void
            done = [
                await resolve(session, key=f"{key}:{pid}" if rec.transfer_ids else key, pending_id=pid, memo=memo)
                for pid in pending
            ]
            return _Moved(done, sum(t.amount for t in done))
        return _Moved([], None)

    async def _allocate(self, session, rec: TransitionRecord, need: int, as_of, key: str, memo: str) -> _Moved:
        """Split the entitlement across sources by the allocation policy (or take it all from the source
        Finance named), cut it into the tranche plan, and reserve one pending transfer per piece."""
        household = await households.get_household(session, rec.household_code)
        chosen = eligible(await finance_db.source_rows(session), household, only=rec.source)
        free = await finance_db.lock_free_balances(session, [r.account_id for r in chosen])
        views = [SourceView(r.code, r.category, r.priority, free[r.account_id], r.rules) for r in chosen]
        if rec.source:
            pieces = from_one_source(views[0], household, need)
        else:
            alloc_policy = await finance_db.allocation_policy(session, household.programme, as_of)
            pieces = plan_allocation(household, need, views, alloc_policy)
        plan = await finance_db.tranche_plan(session, rec.support_type, rec.beneficiary_group, as_of)
        allocation: list[AllocationPiece] = []
        transfers: list[ledger.Transfer] = []
        for n, (spec, tranche_pieces) in enumerate(
            zip(plan.tranches, split_into_tranches(pieces, plan, need), strict=True), start=1
        ):
            reserved = [
                await ledger.reserve(
                    session,
                    key=f"{key}:t{n}:{source}",
                    source=source,
                    household_code=rec.household_code,
                    amount=amount,
                    memo=memo,
                    tranche=n,
                )
                for source, amount in tranche_pieces
            ]
            transfers += reserved
            allocation.append(
                AllocationPiece(
                    tranche=n,
                    percent=spec.percent,
                    milestone=spec.milestone,
                    amount=sum(t.amount for t in reserved),
                    pieces=[
                        Piece(transfer_id=t.id, source=src, amount=t.amount)
                        for t, (src, _) in zip(reserved, tranche_pieces, strict=True)
                    ],
                )
            )
        await finance_db.record_allocation(session, rec.household_code, allocation)
        return _Moved(transfers, need, sources="+".join(dict.fromkeys(src for src, _ in pieces)), allocation=allocation)

    async def _adjust(
        self, session, rec: TransitionRecord, row, change: review_checks.Decision, key: str, memo: str
    ) -> _Moved:
        """A change of support type approved: the entitlement from the policy table for the new type; what the
        tranches not yet paid hold goes back to its sources, and they are reserved again, from the same sources in
        the same proportions, for what is left to pay (the new entitlement less what was paid, never touched)."""
        as_of = rec.at.astimezone(VIETNAM).date()
        new_type = SupportType(change.request.value)
        entitlement = await policy.entitlement(session, new_type, rec.beneficiary_group, as_of)
        household = (await households.get_household(session, rec.household_code)).model_copy(
            update={"support_type": new_type}
        )
        left = entitlement - row.paid
        if left <= 0:
            raise Refusal(
                "ChangeBelowPaid",
                f"household {rec.household_code} was paid {dong(row.paid)}; {new_type.value} is entitled to "
                f"{dong(entitlement)}: nothing would be left to pay (recover the difference, or cancel)",
            )
        await review_checks.no_payment_in_flight(session, rec.household_code)
        pending = await restores.current_ids(session, rec.household_code, rec.transfer_ids) if rec.transfer_ids else []
        pieces = await review_checks.unpaid_pieces(session, rec.household_code, pending)
        if not pieces:
            raise Refusal("NoUnpaidTranche", f"household {rec.household_code} has no tranche left unpaid to adjust")
        # Each source must cover the household as it will be: a source kept for repairs does not pay a new build.
        rules = {r.code: r for r in await finance_db.source_rows(session)}
        barred = sorted(
            {p.source for p in pieces if p.source not in rules or not covers(rules[p.source].rules, household)}
        )
        if barred:
            raise Refusal(
                "SourceNotEligible",
                f"funding source(s) {', '.join(barred)} of household {rec.household_code} do not cover "
                f"{new_type.value} by their rules: cancel the unpaid tranches and allocate again instead",
            )
        voided = [await ledger.void(session, key=f"{key}:void:{p.id}", pending_id=p.id, memo=memo) for p in pieces]
        released = sum(t.amount for t in voided)
        shares = review_checks.rescale([p.amount for p in pieces], left)
        per_tranche: dict[int, int] = {}
        per_source = await review_db.paid_by_source(session, rec.household_code)
        for p, amount in zip(pieces, shares, strict=True):
            per_tranche[p.tranche] = per_tranche.get(p.tranche, 0) + amount
            per_source[p.source] = per_source.get(p.source, 0) + amount
        # The caps a house has under the new type, of each source and of each tier of the allocation policy.
        capped = [
            (s, [s], cap)
            for s in per_source
            if s in rules and (cap := rules[s].rules.max_per_house.get(new_type.value)) is not None
        ]
        alloc_policy = await finance_db.allocation_policy(session, household.programme, as_of)
        for tier in alloc_policy.tiers if alloc_policy else []:
            if tier.programme_households_only and not household.programme:
                continue
            if (cap := tier.max_per_house.get(new_type.value)) is not None:
                members = [
                    s for s in per_source if s in rules and (rules[s].category in tier.categories or s in tier.sources)
                ]
                capped.append((tier.name, members, cap))
        for name, members, cap in capped:
            total = sum(per_source[s] for s in members)
            if total > cap:
                raise Refusal(
                    "SourceCapExceeded",
                    f"{name} would pay household {rec.household_code} {dong(total)} as a {new_type.value}; "
                    f"{dong(cap)} a house at most: cancel the unpaid tranches and allocate again instead",
                )
        if any(total <= 0 for total in per_tranche.values()):
            raise Refusal(
                "ChangeBelowPaid",
                f"household {rec.household_code}: {dong(left)} left to pay cannot fill its unpaid tranches "
                f"{', '.join(map(str, sorted(per_tranche)))}",
            )
        reserved: list[ledger.Transfer] = []
        by_tranche: dict[int, list[tuple[ledger.Transfer, str]]] = {}
        for p, amount in zip(pieces, shares, strict=True):
            if amount <= 0:
                continue
            t = await ledger.reserve(
                session,
                key=f"{key}:t{p.tranche}:{p.source}",
                source=p.source,
                household_code=rec.household_code,
                amount=amount,
                memo=memo,
                tranche=p.tranche,
            )
            reserved.append(t)
            by_tranche.setdefault(p.tranche, []).append((t, p.source))
        plan = {r.tranche: r for r in await households.tranche_rows_of(session, [rec.household_code])}
        allocation = [
            AllocationPiece(
                tranche=n,
                percent=plan[n].percent,
                milestone=plan[n].milestone,
                amount=sum(t.amount for t, _ in got),
                pieces=[Piece(transfer_id=t.id, source=src, amount=t.amount) for t, src in got],
            )
            for n, got in sorted(by_tranche.items())
        ]
        touched = {p.tranche for p in pieces}
        await review_db.set_tranche_amounts(
            session, rec.household_code, {n: sum(t.amount for t, _ in by_tranche.get(n, [])) for n in touched}
        )
        return _Moved(
            [*voided, *reserved],
            sum(t.amount for t in reserved),
            allocation=allocation,
            released=released,
            entitlement=entitlement,
        )

    async def _adjusted(self, session, rec: TransitionRecord, row) -> tuple[list[AllocationPiece], dict]:
        """What a recorded change of support type did, read back from the ledger under its key (a retry after
        the first attempt committed): the new reservations by tranche, what the voids released, the new
        entitlement (the policy table's for the type the register now holds)."""
        key = f"{rec.idempotency_key}:{rec.money.value}:"
        allocation, _ = await finance_db.allocation_recorded(session, rec.household_code, key + "t")
        released = await ledger.sum_under(session, rec.household_code, key + "void:")
        as_of = rec.at.astimezone(VIETNAM).date()
        entitlement = await policy.entitlement(session, SupportType(row.support_type), rec.beneficiary_group, as_of)
        return allocation, {"released": released, "entitlement": entitlement}

    async def _update_payouts(self, session, rec: TransitionRecord) -> None:
        if rec.tranche_updates:
            await finance_db.update_tranches(
                session,
                rec.household_code,
                rec.tranche_updates,
                authorised_by=rec.actor.user_id if rec.step is Step.AUTHORISE_PAYOUT else None,
                released_by=rec.actor.user_id if rec.step is Step.RELEASE_PAYOUT else None,
            )
        if rec.step in CHANNEL_STEPS and rec.payment_id:
            await finance_db.resolve_payment(
                session,
                rec.payment_id,
                "confirmed" if rec.step is Step.PAYMENT_CONFIRMED else "failed",
                bank_ref=rec.evidence[0] if rec.evidence else None,
                reason=rec.reason,
                at=rec.at,
            )

    def _messages(self, rec: TransitionRecord, row: households.HouseholdRow, amount: int | None) -> list[dict]:
        """The outbox rows that announce this step: a task for the agency that acts next, and news for the
        household of what touches its money or its file."""
        where = place(row.district, row.commune)
        if rec.step in PAYOUT_STEPS or rec.step in CHANNEL_STEPS:
            return self._payout_messages(rec, where, amount)
        out = []
        if rec.next_agency and not rec.to_stage.terminal:
            out.append(
                outbox.row(
                    key=f"{rec.idempotency_key}:task",
                    household_code=rec.household_code,
                    kind="task",
                    channel="agency",
                    recipient=f"{rec.next_agency} ({where})",
                    subject=f"Hộ {rec.household_code}: chờ bước {stage_name(rec.to_stage)}",
                    body=(
                        f"Hộ {rec.household_code} ({where}) đã qua bước '{stage_name(rec.from_stage)}' "
                        f"({rec.actor.user_id}, {rec.actor.agency}); "
                        f"đề nghị thực hiện bước '{stage_name(rec.to_stage)}'."
                    ),
                )
            )
        household_news = {
            Step.ALLOCATE: f"Hộ được bố trí {dong(amount)} hỗ trợ; có thể khởi công.",
            Step.SETTLE: "Hồ sơ hỗ trợ nhà ở của hộ đã được quyết toán và hoàn thành.",
            Step.CANCEL: f"Hồ sơ hỗ trợ nhà ở của hộ đã bị hủy. Lý do: {rec.reason}",
            Step.MOVE: f"Hồ sơ hỗ trợ nhà ở của hộ chuyển về UBND {rec.moved_to} ({', '.join(rec.evidence)}).",
        }
        if rec.step in household_news:
            out.append(
                outbox.row(
                    key=f"{rec.idempotency_key}:household",
                    household_code=rec.household_code,
                    kind="household",
                    channel="sms",
                    recipient=f"household:{rec.household_code}",
                    subject=f"Hỗ trợ nhà ở - hộ {rec.household_code}",
                    body=household_news[rec.step],
                )
            )
        return out

    def _payout_messages(self, rec: TransitionRecord, where: str, amount: int | None) -> list[dict]:
        n = rec.tranche
        tasks = {
            Step.REPORT_PROGRESS: f"Hộ {rec.household_code}: đợt {n} đến hạn chi, đề nghị duyệt chi",
            Step.AUTHORISE_PAYOUT: f"Hộ {rec.household_code}: đợt {n} đã được duyệt chi, đề nghị chuyển tiền",
            Step.PAYMENT_FAILED: f"Hộ {rec.household_code}: chuyển tiền đợt {n} không thành công ({rec.reason})",
        }
        out = []
        if rec.step in tasks and rec.next_agency:
            out.append(
                outbox.row(
                    key=f"{rec.idempotency_key}:task",
                    household_code=rec.household_code,
                    kind="task",
                    channel="agency",
                    recipient=f"{rec.next_agency} ({where})",
                    subject=tasks[rec.step],
                    body=f"{tasks[rec.step]}. Người thực hiện bước trước: {rec.actor.user_id} ({rec.actor.agency}).",
                )
            )
        if rec.step is Step.PAYMENT_CONFIRMED:
            out.append(
                outbox.row(
                    key=f"{rec.idempotency_key}:household",
                    household_code=rec.household_code,
                    kind="household",
                    channel="sms",
                    recipient=f"household:{rec.household_code}",
                    subject=f"Hỗ trợ nhà ở - hộ {rec.household_code}",
                    body=f"Hộ đã nhận đợt {n}: {dong(amount)} hỗ trợ nhà ở.",
                )
            )
        return out


@dataclass(frozen=True)
class _Moved:
    """What one transition moved in the ledger."""

    transfers: list[ledger.Transfer]
    amount: int | None
    sources: str | None = None
    allocation: list[AllocationPiece] = field(default_factory=list)
    released: int | None = None  # ADJUST: what the unpaid tranches gave back
    entitlement: int | None = None  # ADJUST: the entitlement from now on

    @property
    def first(self) -> ledger.Transfer | None:
        return self.transfers[0] if self.transfers else None
