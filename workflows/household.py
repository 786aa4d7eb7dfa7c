"""One workflow per household: verification → approval → fund allocation → construction → acceptance →
settlement.

Every action is a Workflow Update. Its validator refuses, before anything is written to history, a step
out of order, a role the policy does not allow, an actor outside the household's jurisdiction, a breach
of segregation of duties and missing evidence. The handler re-checks under a lock (another update may have
moved the household since validation), then runs one activity that writes the audit row, the ledger
postings, the outbox rows and the read model in one transaction; the state changes only once that
activity has succeeded.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.household import HouseholdActivities
    from models import (
        AcceptInput,
        AcceptResult,
        ActionInput,
        ActionResult,
        AllocateInput,
        AllocateResult,
        ApproveInput,
        ApproveResult,
        CancelInput,
        CancelResult,
        CompleteConstructionInput,
        CompleteConstructionResult,
        HouseholdState,
        HouseholdWorkflowInput,
        HouseholdWorkflowResult,
        MoneyOp,
        ReminderRecord,
        SendBackInput,
        SendBackResult,
        SetPolicyInput,
        SetPolicyResult,
        SettleInput,
        SettleResult,
        Stage,
        Step,
        TimelineEntry,
        TransitionRecord,
        VerifyInput,
        VerifyResult,
    )
    from models.household import FORWARD, FUNDED_STAGES
    from models.records import money_effect
    from workflows import rules, search_attributes

R = TypeVar("R", bound=ActionResult)

ACTIVITY_TIMEOUT = timedelta(seconds=30)
# A database outage makes the caller wait at most this long before the update fails; nothing changes.
ACTIVITY_DEADLINE = timedelta(minutes=2)
ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))


@workflow.defn
class HouseholdWorkflow:
    @workflow.init
    def __init__(self, inp: HouseholdWorkflowInput) -> None:
        self._household = inp.household
        self._policy = inp.policy
        self._state = HouseholdState(
            household_code=inp.household.code,
            stage=Stage.VERIFICATION,
            stage_since=workflow.now(),
            policy_version=inp.policy.version,
        )
        self._reminders_in_stage = 0
        self._changes = 0  # bumped by every transition and policy change: wakes the SLA timer
        self._lock = asyncio.Lock()

    @workflow.run
    async def run(self, inp: HouseholdWorkflowInput) -> HouseholdWorkflowResult:
        while not self._state.stage.terminal:
            await self._wait_in_stage()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return HouseholdWorkflowResult(
            household_code=self._household.code,
            stage=self._state.stage,
            paid=self._state.paid,
            steps=len(self._state.timeline),
        )

    async def _wait_in_stage(self) -> None:
        """Wait for the next change; remind the responsible agency each time the stage's SLA runs out."""
        changes = self._changes
        stage = self._state.stage
        days = self._policy.sla_days.get(stage)
        if not days:
            await workflow.wait_condition(lambda: self._changes != changes)
            return
        due = self._state.stage_since + timedelta(days=days) * (self._reminders_in_stage + 1)
        remaining = due - workflow.now()
        if remaining > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self._changes != changes, timeout=remaining)
                return
            except TimeoutError:
                pass
        self._reminders_in_stage += 1
        step = FORWARD[stage][0]
        await workflow.execute_activity_method(
            HouseholdActivities.send_reminder,
            ReminderRecord(
                idempotency_key=f"{workflow.info().workflow_id}#{len(self._state.timeline)}#reminder{self._reminders_in_stage}",
                household_code=self._household.code,
                stage=stage,
                agency=self._policy.rule(step).responsible_agency,
                entered_at=self._state.stage_since,
                at=workflow.now(),
                overdue_days=(workflow.now() - self._state.stage_since).days,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        self._state = self._state.model_copy(update={"reminders_sent": self._state.reminders_sent + 1})
        workflow.logger.info("SLA reminder sent", extra={"stage": stage.value, "n": self._reminders_in_stage})

    # ---------------------------------------------------------------- queries

    @workflow.query
    def state(self) -> HouseholdState:
        return self._state

    # ---------------------------------------------------------------- updates

    @workflow.update
    async def verify(self, inp: VerifyInput) -> VerifyResult:
        return await self._act(Step.VERIFY, inp, VerifyResult)

    @verify.validator
    def _validate_verify(self, inp: VerifyInput) -> None:
        self._validate(Step.VERIFY, inp)

    @workflow.update
    async def approve(self, inp: ApproveInput) -> ApproveResult:
        return await self._act(Step.APPROVE, inp, ApproveResult)

    @approve.validator
    def _validate_approve(self, inp: ApproveInput) -> None:
        self._validate(Step.APPROVE, inp)

    @workflow.update
    async def allocate(self, inp: AllocateInput) -> AllocateResult:
        return await self._act(Step.ALLOCATE, inp, AllocateResult)

    @allocate.validator
    def _validate_allocate(self, inp: AllocateInput) -> None:
        self._validate(Step.ALLOCATE, inp)

    @workflow.update
    async def complete_construction(self, inp: CompleteConstructionInput) -> CompleteConstructionResult:
        return await self._act(Step.COMPLETE_CONSTRUCTION, inp, CompleteConstructionResult)

    @complete_construction.validator
    def _validate_complete_construction(self, inp: CompleteConstructionInput) -> None:
        self._validate(Step.COMPLETE_CONSTRUCTION, inp)

    @workflow.update
    async def accept(self, inp: AcceptInput) -> AcceptResult:
        return await self._act(Step.ACCEPT, inp, AcceptResult)

    @accept.validator
    def _validate_accept(self, inp: AcceptInput) -> None:
        self._validate(Step.ACCEPT, inp)

    @workflow.update
    async def settle(self, inp: SettleInput) -> SettleResult:
        return await self._act(Step.SETTLE, inp, SettleResult)

    @settle.validator
    def _validate_settle(self, inp: SettleInput) -> None:
        self._validate(Step.SETTLE, inp)

    @workflow.update
    async def send_back(self, inp: SendBackInput) -> SendBackResult:
        return await self._act(Step.SEND_BACK, inp, SendBackResult)

    @send_back.validator
    def _validate_send_back(self, inp: SendBackInput) -> None:
        self._validate(Step.SEND_BACK, inp)

    @workflow.update
    async def cancel(self, inp: CancelInput) -> CancelResult:
        return await self._act(Step.CANCEL, inp, CancelResult)

    @cancel.validator
    def _validate_cancel(self, inp: CancelInput) -> None:
        self._validate(Step.CANCEL, inp)

    @workflow.update
    async def set_policy(self, inp: SetPolicyInput) -> SetPolicyResult:
        """Apply a new policy version to this household from now on (agencies change mid-programme)."""
        self._validate_set_policy(inp)
        previous = self._policy.version
        self._policy = inp.policy
        self._state = self._state.model_copy(update={"policy_version": inp.policy.version})
        self._changes += 1
        return SetPolicyResult(previous_version=previous, version=inp.policy.version)

    @set_policy.validator
    def _validate_set_policy(self, inp: SetPolicyInput) -> None:
        try:
            rules.check_policy_change(inp.actor, self._policy.policy_admin_roles)
        except rules.RuleViolation as v:
            raise ApplicationError(v.message, type=v.rule, non_retryable=True) from None

    # ---------------------------------------------------------------- the one path every step takes

    def _validate(self, step: Step, inp: ActionInput) -> rules.Target:
        try:
            return rules.check_action(
                step=step,
                stage=self._state.stage,
                household=self._household,
                policy=self._policy,
                action=inp,
                timeline=self._state.timeline,
            )
        except rules.RuleViolation as v:
            raise ApplicationError(v.message, type=v.rule, non_retryable=True) from None

    async def _act(self, step: Step, inp: ActionInput, result_type: type[R]) -> R:
        async with self._lock:
            target = self._validate(step, inp)
            state = self._state
            seq = len(state.timeline) + 1
            money, reservation = self._money_for(step, target.to_stage)
            next_step = FORWARD.get(target.to_stage)
            record = TransitionRecord(
                idempotency_key=f"{workflow.info().workflow_id}#{seq}",
                workflow_id=workflow.info().workflow_id,
                household_code=self._household.code,
                seq=seq,
                step=step,
                from_stage=state.stage,
                to_stage=target.to_stage,
                at=workflow.now(),
                actor=inp.actor,
                evidence=inp.evidence,
                reason=inp.reason,
                money=money,
                source=getattr(inp, "source", None),
                reservation_id=reservation,
                support_type=self._household.support_type,
                beneficiary_group=self._household.beneficiary_group,
                next_agency=self._policy.rule(next_step[0]).responsible_agency if next_step else None,
            )
            try:
                outcome = await workflow.execute_activity_method(
                    HouseholdActivities.record_transition,
                    record,
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    schedule_to_close_timeout=ACTIVITY_DEADLINE,
                    retry_policy=ACTIVITY_RETRY,
                )
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError):
                    raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
                raise ApplicationError(
                    f"step {step.value!r} was not recorded: {cause or err}", type="NotRecorded", non_retryable=True
                ) from None

            update: dict[str, object] = {
                "stage": target.to_stage,
                "stage_since": record.at,
                **money_effect(money, amount=outcome.amount, transfer_id=outcome.transfer_id, source=record.source,
                               paid_before=state.paid),  # fmt: skip
            }
            entry = TimelineEntry(
                seq=seq,
                step=step,
                from_stage=state.stage,
                to_stage=target.to_stage,
                at=record.at,
                user_id=inp.actor.user_id,
                role=inp.actor.role,
                agency=inp.actor.agency,
                evidence=inp.evidence,
                reason=inp.reason,
                amount=outcome.amount,
                audit_hash=outcome.audit_hash,
            )
            update["timeline"] = [*state.timeline, entry]
            self._state = state.model_copy(update=update)
            self._reminders_in_stage = 0
            self._changes += 1
            workflow.upsert_search_attributes(search_attributes.updates(self._household, target.to_stage))
            workflow.logger.info(
                "step taken",
                extra={"step": step.value, "to_stage": target.to_stage.value, "user": inp.actor.user_id},
            )
            # Each result model declares which of these it reports.
            money_facts = {
                "amount": outcome.amount,
                "transfer_id": outcome.transfer_id,
                "source": record.source,
                "released": state.reserved if money is MoneyOp.VOID else 0,
            }
            extra = {k: v for k, v in money_facts.items() if k in result_type.model_fields}
            return result_type(
                household_code=self._household.code,
                step=step,
                from_stage=state.stage,
                to_stage=target.to_stage,
                seq=seq,
                at=record.at,
                audit_hash=outcome.audit_hash,
                **extra,
            )

    def _money_for(self, step: Step, to_stage: Stage) -> tuple[MoneyOp, int | None]:
        reservation = self._state.reservation_id
        if step is Step.ALLOCATE:
            return MoneyOp.RESERVE, None
        if step is Step.SETTLE:
            return MoneyOp.POST, reservation
        if reservation is not None and to_stage not in FUNDED_STAGES:
            # Cancelled, or sent back before fund allocation: what was reserved goes back to the source.
            return MoneyOp.VOID, reservation
        return MoneyOp.NONE, None
