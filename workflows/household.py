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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.household import HouseholdActivities
    from activities.payments import PaymentActivities
    from core.errors import Refusal
    from core.formatting import local
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
    from models import assertion as assertions
    from models.actions import StepInput
    from models.actor import Actor
    from models.assertion import ActionAssertion
    from models.finance import (
        AuthorisePayoutInput,
        EscalationRecord,
        Milestone,
        PaymentCheck,
        PaymentInstruction,
        PaymentNotice,
        PaymentRequest,
        PayoutBatchInput,
        PayoutInput,
        PayoutResult,
        PayoutStepInput,
        ReleasePayoutInput,
        ReportProgressInput,
        SettleRequest,
        TrancheState,
        TrancheStatus,
        failure_reason,
    )
    from models.household import FORWARD, FUNDED_STAGES, SupportType
    from models.records import MoneyPlan, TransitionOutcome, money_effect
    from models.reorganisation import MoveInput, MoveResult
    from models.review import (
        ChangeKind,
        ChangeRequest,
        ChangeRequestInput,
        ChangeRequestResult,
        DecideChangeInput,
        DecideChangeResult,
        ItemStatus,
        Objection,
        ObjectionInput,
        ObjectionOutcome,
        ObjectionResult,
        OverrideInput,
        OverrideResult,
        Posting,
        PostInput,
        PostResult,
        ResolveObjectionInput,
        ResolveObjectionResult,
    )
    from workflows import authn, rules, search_attributes

R = TypeVar("R", bound=ActionResult)

ACTIVITY_TIMEOUT = timedelta(seconds=30)
# A database outage makes the caller wait at most this long before the update fails; nothing changes.
ACTIVITY_DEADLINE = timedelta(minutes=2)
ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
# Sending to the payment channel may take longer to get through; if it never does, the confirmation
# timeout escalates and re-sends the same instruction (same id), so nothing is lost or paid twice.
SUBMIT_DEADLINE = timedelta(minutes=10)

# Households allocated from this change on are paid in tranches (reserve per tranche and source, post
# each tranche on the channel's confirmation); those allocated before keep one reservation posted at
# settlement. Remove the legacy branch once no household allocated before it is open.
TRANCHES_PATCH = "tranche-payouts-2025"
# From this change on, a step's record is written by a local activity: run by the worker inside the
# workflow task, its result (which echoes the record) kept in one marker event, instead of an activity
# task the server schedules, dispatches and completes. Households that took a step before it keep the
# regular activity to the end.
LOCAL_RECORD_PATCH = "record-step-locally-2026"
# From this change on, a released payment the channel has not confirmed is asked about after short,
# growing gaps (policy `payment_inquiry_minutes`), not only when it is escalated after
# `payment_confirm_hours`: a lost callback or a restart is recovered within minutes.
INQUIRY_PATCH = "payment-inquiry-2026"
INQUIRY_DEADLINE = timedelta(minutes=2)  # an inquiry the channel does not answer in time waits for the next
# From this change on, every action is signed (workflows/authn.py): the handler keeps each assertion's
# one-time id and hands the assertion to the recording activity; a policy change is recorded as a step; the
# channel's answer is asked and recorded in one local activity, and instructions are built from PostgreSQL.
SIGNED_PATCH = "signed-actions-2026"
# From this change on, a batch's step names its batch in its record's own field (`batch_id`) as well as in its
# reason ("batch <id>", which the audit row hashes and the timeline shows, as before).
BATCH_ID_PATCH = "batch-id-field-2026"


@dataclass(frozen=True)
class StepFacts:
    """What the caller decides about a step: who, on what evidence, to which stage, moving what. `_transition`
    adds what the workflow knows (the sequence number and key, the household, the stage it leaves, the time, the
    policy version) to make the step's TransitionRecord."""

    step: Step
    actor: Actor
    evidence: list[str]
    reason: str | None
    to_stage: Stage
    money: MoneyPlan = field(default_factory=MoneyPlan)
    source: str | None = None  # RESERVE: the funding source asked for (None: the allocation policy splits)
    plan_tranches: bool = False
    tranche: int | None = None
    payment_id: str | None = None
    milestone: str | None = None
    next_agency: str | None = None
    assertion: ActionAssertion | None = None
    signed_input: dict | None = None
    batch_id: str | None = None
    moved_to: str | None = None
    moved_policy: str | None = None


def _one_notice(args: tuple[object, ...]) -> PaymentNotice | None:
    if len(args) != 1:
        return None
    try:
        return PaymentNotice.model_validate(args[0])
    except ValueError:
        return None


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
            posting_days=inp.policy.posting_days,
            imported_by=inp.imported_by,
        )
        self._reminders_in_stage = 0
        self._changes = 0  # bumped by every transition and policy change: wakes the SLA timer
        self._lock = asyncio.Lock()
        # One-time ids of the assertions of the steps recorded here: a copied assertion is refused. Kept by the
        # handlers (which run on replay), so the set is rebuilt from the history.
        self._nonces: set[str] = set()

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
        """Wait for the next change; remind the responsible agency each time the stage's SLA runs out, and
        escalate a released payment the channel has not confirmed in time."""
        changes = self._changes
        stage = self._state.stage
        sla_due = rules.sla_due(self._policy, stage, self._state.stage_since, self._reminders_in_stage)
        payment = self._next_payment_due()
        dues = [d for d in (sla_due, payment[0] if payment else None) if d is not None]
        if not dues:
            await workflow.wait_condition(lambda: self._changes != changes)
            return
        due = min(dues)
        remaining = due - workflow.now()
        if remaining > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self._changes != changes, timeout=remaining)
                return
            except TimeoutError:
                pass
        if payment and payment[0] == due:
            await (self._inquire if payment[2] else self._escalate)(payment[1])
            return
        self._reminders_in_stage += 1
        step = FORWARD[stage][0]
        local = workflow.patched(SIGNED_PATCH)  # since signed actions nothing awaited here can be hand-completed
        run = workflow.execute_local_activity_method if local else workflow.execute_activity_method
        await run(
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
        self._validate(Step.VERIFY, inp, signed=True)

    @workflow.update
    async def approve(self, inp: ApproveInput) -> ApproveResult:
        return await self._act(Step.APPROVE, inp, ApproveResult)

    @approve.validator
    def _validate_approve(self, inp: ApproveInput) -> None:
        self._validate(Step.APPROVE, inp, signed=True)

    @workflow.update
    async def allocate(self, inp: AllocateInput) -> AllocateResult:
        return await self._act(Step.ALLOCATE, inp, AllocateResult)

    @allocate.validator
    def _validate_allocate(self, inp: AllocateInput) -> None:
        self._validate(Step.ALLOCATE, inp, signed=True)

    @workflow.update
    async def complete_construction(self, inp: CompleteConstructionInput) -> CompleteConstructionResult:
        return await self._act(Step.COMPLETE_CONSTRUCTION, inp, CompleteConstructionResult)

    @complete_construction.validator
    def _validate_complete_construction(self, inp: CompleteConstructionInput) -> None:
        self._validate(Step.COMPLETE_CONSTRUCTION, inp, signed=True)

    @workflow.update
    async def accept(self, inp: AcceptInput) -> AcceptResult:
        return await self._act(Step.ACCEPT, inp, AcceptResult)

    @accept.validator
    def _validate_accept(self, inp: AcceptInput) -> None:
        self._validate(Step.ACCEPT, inp, signed=True)

    @workflow.update
    async def settle(self, inp: SettleInput) -> SettleResult:
        return await self._act(Step.SETTLE, inp, SettleResult)

    @settle.validator
    def _validate_settle(self, inp: SettleInput) -> None:
        self._validate(Step.SETTLE, inp, signed=True)

    @workflow.update
    async def send_back(self, inp: SendBackInput) -> SendBackResult:
        return await self._act(Step.SEND_BACK, inp, SendBackResult)

    @send_back.validator
    def _validate_send_back(self, inp: SendBackInput) -> None:
        self._validate(Step.SEND_BACK, inp, signed=True)

    @workflow.update
    async def cancel(self, inp: CancelInput) -> CancelResult:
        return await self._act(Step.CANCEL, inp, CancelResult)

    @cancel.validator
    def _validate_cancel(self, inp: CancelInput) -> None:
        self._validate(Step.CANCEL, inp, signed=True)

    @workflow.update
    async def set_policy(self, inp: SetPolicyInput) -> SetPolicyResult:
        """Apply a new policy version to this household from now on (agencies change mid-programme). The change
        is a step of its own: recorded (the activity checks the version against the policy table and the admin
        against the users table) before it applies."""
        if not workflow.patched(SIGNED_PATCH):
            self._check_policy_change(inp)  # histories before signed actions: applied, not recorded
            return self._apply_policy(inp)
        async with self._lock:
            assertion, signed = self._unused_assertion(inp)
            self._check_policy_change(inp)
            await self._transition(
                StepFacts(
                    Step.SET_POLICY,
                    inp.actor,
                    [inp.policy.version],
                    None,
                    self._state.stage,
                    assertion=assertion,
                    signed_input=signed,
                )
            )
            return self._apply_policy(inp)

    @set_policy.validator
    def _validate_set_policy(self, inp: SetPolicyInput) -> None:
        self._authenticate(Step.SET_POLICY, inp)
        self._check_policy_change(inp)

    def _check_policy_change(self, inp: SetPolicyInput) -> None:
        try:
            rules.check_policy_change(inp.actor, self._policy.policy_admin_roles)
        except Refusal as v:
            raise v.application_error() from None

    def _apply_policy(self, inp: SetPolicyInput) -> SetPolicyResult:
        previous = self._policy.version
        self._policy = inp.policy
        self._state = self._state.model_copy(
            update={"policy_version": inp.policy.version, "posting_days": inp.policy.posting_days}
        )
        self._changes += 1
        return SetPolicyResult(previous_version=previous, version=inp.policy.version)

    @workflow.update
    async def move(self, inp: MoveInput) -> MoveResult:
        """Move the household to its new unit under a reorganisation of local government (and to the policy in
        force there from its effective date). A step of its own, recorded before it applies: the recording
        activity checks the destination against the gazetteer and the policy against the policy table. The
        history keeps where the household was; from now on its jurisdiction is the new unit's."""
        async with self._lock:
            self._check_move(inp)
            _, outcome = await self._transition(
                StepFacts(
                    Step.MOVE,
                    inp.actor,
                    [inp.basis],
                    inp.reason,
                    self._state.stage,
                    assertion=inp.batch.assertion,
                    signed_input=assertions.signed_input(inp.batch),
                    batch_id=inp.batch.batch_id,
                    moved_to=inp.to_commune,
                    moved_policy=inp.policy_version,
                )
            )
            previous = self._policy.version
            moved_to = outcome.moved_to or inp.to_commune  # the register's, as the recording activity wrote it
            self._household = self._household.model_copy(
                update={"district": outcome.moved_district if outcome.moved_to else None, "commune": moved_to}
            )
            if outcome.policy is not None:  # the policy table's, as the recording activity read it
                self._policy = outcome.policy
            self._state = self._state.model_copy(
                update={"policy_version": self._policy.version, "posting_days": self._policy.posting_days}
            )
            self._reminders_in_stage = 0
            self._changes += 1
            workflow.upsert_search_attributes(search_attributes.updates(self._household, self._state.stage))
            return MoveResult(
                household_code=self._household.code,
                seq=len(self._state.timeline),
                to_commune=inp.to_commune,
                previous_version=previous,
                version=self._policy.version,
                audit_hash=self._state.timeline[-1].audit_hash,
            )

    @move.validator
    def _validate_move(self, inp: MoveInput) -> None:
        try:
            authn.check_move(inp, now=workflow.now(), seen=self._nonces)
        except Refusal as v:
            raise v.application_error() from None
        self._check_move(inp)

    def _check_move(self, inp: MoveInput) -> None:
        try:
            rules.check_move(
                inp, stage=self._state.stage, household=self._household, admin_roles=self._policy.policy_admin_roles
            )
        except Refusal as v:
            raise v.application_error() from None

    # ---------------------------------------------------------------- before the money (models/review.py)

    @workflow.update
    async def post_list(self, inp: PostInput) -> PostResult:
        return await self._review_step(Step.POST_LIST, inp, PostResult)

    @post_list.validator
    def _validate_post_list(self, inp: PostInput) -> None:
        self._validate_review(Step.POST_LIST, inp, signed=True)

    @workflow.update
    async def record_objection(self, inp: ObjectionInput) -> ObjectionResult:
        return await self._review_step(Step.RECORD_OBJECTION, inp, ObjectionResult)

    @record_objection.validator
    def _validate_record_objection(self, inp: ObjectionInput) -> None:
        self._validate_review(Step.RECORD_OBJECTION, inp, signed=True)

    @workflow.update
    async def resolve_objection(self, inp: ResolveObjectionInput) -> ResolveObjectionResult:
        return await self._review_step(Step.RESOLVE_OBJECTION, inp, ResolveObjectionResult)

    @resolve_objection.validator
    def _validate_resolve_objection(self, inp: ResolveObjectionInput) -> None:
        self._validate_review(Step.RESOLVE_OBJECTION, inp, signed=True)

    @workflow.update
    async def override_double_support(self, inp: OverrideInput) -> OverrideResult:
        return await self._review_step(Step.OVERRIDE_DOUBLE_SUPPORT, inp, OverrideResult)

    @override_double_support.validator
    def _validate_override_double_support(self, inp: OverrideInput) -> None:
        self._validate_review(Step.OVERRIDE_DOUBLE_SUPPORT, inp, signed=True)

    @workflow.update
    async def request_change(self, inp: ChangeRequestInput) -> ChangeRequestResult:
        return await self._review_step(Step.REQUEST_CHANGE, inp, ChangeRequestResult)

    @request_change.validator
    def _validate_request_change(self, inp: ChangeRequestInput) -> None:
        self._validate_review(Step.REQUEST_CHANGE, inp, signed=True)

    @workflow.update
    async def decide_change(self, inp: DecideChangeInput) -> DecideChangeResult:
        return await self._review_step(Step.DECIDE_CHANGE, inp, DecideChangeResult)

    @decide_change.validator
    def _validate_decide_change(self, inp: DecideChangeInput) -> None:
        self._validate_review(Step.DECIDE_CHANGE, inp, signed=True)

    def _review(self) -> rules.Review:
        return rules.review_of(self._state, local(workflow.now()).date())

    def _validate_review(self, step: Step, inp: ActionInput, *, signed: bool = False) -> Stage:
        if signed:
            self._authenticate(step, inp)
        try:
            return rules.check_review(
                step=step,
                inp=inp,
                stage=self._state.stage,
                household=self._household,
                policy=self._policy,
                timeline=self._state.timeline,
                review=self._review(),
                tranches=self._state.tranches,
                payee=self._state.payee,
            )
        except Refusal as v:
            raise v.application_error() from None

    def _review_money(self, step: Step, inp: ActionInput, to_stage: Stage) -> MoneyPlan:
        """A withdrawal approved is a cancellation's money; a change of support type approved re-reserves the
        tranches not yet paid (households allocated in one reservation, before tranches, keep theirs: refused)."""
        if to_stage is Stage.CANCELLED:
            return self._money_for(Step.CANCEL, to_stage)
        if step is not Step.DECIDE_CHANGE or not inp.approved:
            return MoneyPlan()
        change = next(c for c in self._state.changes if c.id == inp.change)
        if change.kind is not ChangeKind.SUPPORT_TYPE or self._state.stage not in FUNDED_STAGES:
            return MoneyPlan()
        if self._state.reservation_id is not None:
            raise ApplicationError(
                f"household {self._household.code} was allocated in one reservation, before tranches: cancel and "
                "re-import it to change its support type",
                type="LegacyAllocation",
                non_retryable=True,
            )
        unpaid = [t for t in self._state.tranches if t.status in (TrancheStatus.PLANNED, TrancheStatus.DUE)]
        return MoneyPlan(MoneyOp.ADJUST, transfer_ids=[p.transfer_id for t in unpaid for p in t.pieces])

    async def _review_step(self, step: Step, inp: ActionInput, result_type: type[R]) -> R:
        async with self._lock:
            assertion, signed = self._unused_assertion(inp)
            to_stage = self._validate_review(step, inp)
            state = self._state
            plan = self._review_money(step, inp, to_stage)
            # The agency is told when the household moves on (a step that keeps it where it is tells no one).
            next_step = FORWARD.get(to_stage) if to_stage != state.stage else None
            seq, outcome = await self._transition(
                StepFacts(
                    step,
                    inp.actor,
                    inp.evidence,
                    inp.reason,
                    to_stage,
                    money=plan,
                    next_agency=self._policy.rule(next_step[0]).responsible_agency if next_step else None,
                    assertion=assertion,
                    signed_input=signed,
                )
            )
            if to_stage != state.stage:
                self._reminders_in_stage = 0
            extra = self._reviewed(step, inp, seq, plan, outcome)
            return result_type(
                household_code=self._household.code,
                step=step,
                from_stage=state.stage,
                to_stage=to_stage,
                seq=seq,
                at=self._state.timeline[-1].at,
                audit_hash=outcome.audit_hash,
                **extra,
            )

    def _reviewed(
        self, step: Step, inp: ActionInput, seq: int, plan: MoneyPlan, outcome: TransitionOutcome
    ) -> dict[str, object]:
        """The state after a recorded step before the money; what its result reports."""
        s, who = self._state, inp.actor.user_id
        if step is Step.POST_LIST:
            ends = inp.posted_on + timedelta(days=self._policy.posting_days or 0)
            posting = Posting(seq=seq, place=inp.place, posted_on=inp.posted_on, period_ends=ends, by=who)
            self._state = s.model_copy(update={"posting": posting})
            return {"period_ends": ends}
        if step is Step.RECORD_OBJECTION:
            objection = Objection(
                id=seq,
                objector=inp.objector,
                about=inp.about,
                by=who,
                raised_on=inp.raised_on or local(workflow.now()).date(),
            )
            self._state = s.model_copy(update={"objections": [*s.objections, objection]})
            return {"objection": seq}
        if step is Step.RESOLVE_OBJECTION:
            status = ItemStatus.DISMISSED if inp.outcome is ObjectionOutcome.DISMISSED else ItemStatus.UPHELD
            done = {"status": status, "resolved_by": who, "resolution": inp.reason}
            objections = [o.model_copy(update=done) if o.id == inp.objection else o for o in s.objections]
            self._state = s.model_copy(update={"objections": objections})
            return {"objection": inp.objection, "outcome": inp.outcome}
        if step is Step.OVERRIDE_DOUBLE_SUPPORT:
            self._state = s.model_copy(update={"overridden": [*s.overridden, inp.programme]})
            return {"programme": inp.programme}
        if step is Step.REQUEST_CHANGE:
            change = ChangeRequest(id=seq, kind=inp.kind, value=inp.value, by=who)
            self._state = s.model_copy(update={"changes": [*s.changes, change]})
            return {"change": seq}
        # DECIDE_CHANGE
        change = next(c for c in s.changes if c.id == inp.change)
        status = ItemStatus.APPROVED if inp.approved else ItemStatus.REFUSED
        changes = [
            c.model_copy(update={"status": status, "decided_by": who}) if c.id == change.id else c for c in s.changes
        ]
        update: dict[str, object] = {"changes": changes}
        if inp.approved and change.kind is ChangeKind.PAYEE:
            update["payee"] = change.value
        self._state = s.model_copy(update=update)
        for n, new_status in plan.tranche_updates.items():
            self._set_tranche(n, status=TrancheStatus(new_status))
        if inp.approved and change.kind is ChangeKind.SUPPORT_TYPE:
            self._household = self._household.model_copy(update={"support_type": SupportType(change.value)})
            for a in outcome.allocation:  # the tranches not yet paid, reserved again
                self._set_tranche(a.tranche, amount=a.amount, pieces=a.pieces)
            workflow.upsert_search_attributes(search_attributes.updates(self._household, self._state.stage))
        return {
            "change": change.id,
            "approved": inp.approved,
            "entitlement": outcome.entitlement,
            "released": outcome.released or ((outcome.amount or 0) if plan.op is MoneyOp.VOID else 0),
            "reserved": (outcome.amount or 0) if plan.op is MoneyOp.ADJUST else 0,
        }

    # ---------------------------------------------------------------- who is acting

    def _authenticate(self, step: Step, inp: StepInput | SetPolicyInput) -> None:
        """Refuse (`Unauthenticated`) a step whose signed assertion does not hold (workflows/authn.py). Validators
        only: they do not run on replay, where the keys installed and the time are not the recorded ones."""
        try:
            authn.check_step(
                inp,
                workflow_id=workflow.info().workflow_id,
                step=step.value,
                now=workflow.now(),
                seen=self._nonces,
                household=self._household,
            )
        except Refusal as v:
            raise v.application_error() from None

    def _unused_assertion(self, inp: StepInput | SetPolicyInput) -> tuple[ActionAssertion | None, dict | None]:
        """Under the lock, in the handler: the step's assertion and the input it covers, for the record. Two
        updates validated at once with one assertion: the second finds it used and is refused.

        A payout batch's step carries its batch's assertion, signed for the batch's workflow: the record gets
        that assertion and the batch's signed input, and the activity verifies the batch's signature and that
        the batch covers this step (its action, tranche, actor, evidence; the household in its selection).

        Not behind the patch: handing the activity the assertion changes no command, and a household in flight
        from before the patch (whose replay answers the patch False for the rest of its run) must still hand
        its new, signed steps to the activity that refuses unsigned ones. Steps replayed from before signing
        carry none and pass None."""
        source: StepInput | SetPolicyInput | PayoutBatchInput = inp.signed_as if isinstance(inp, PayoutInput) else inp
        a = source.assertion
        if a is not None and a.nonce in self._nonces:
            raise ApplicationError(
                f"assertion {a.nonce} was used before on this household: a replayed action is refused",
                type=authn.RULE,
                non_retryable=True,
            )
        return a, (assertions.signed_input(source) if a is not None else None)

    # ---------------------------------------------------------------- payouts

    @workflow.update
    async def report_progress(self, inp: ReportProgressInput) -> PayoutResult:
        async with self._lock:
            signed = self._unused_assertion(inp)
            t = self._validate_payout(Step.REPORT_PROGRESS, inp)
            return await self._payout_step(Step.REPORT_PROGRESS, inp, t, TrancheStatus.DUE, signed)

    @report_progress.validator
    def _validate_report_progress(self, inp: ReportProgressInput) -> None:
        self._validate_payout(Step.REPORT_PROGRESS, inp, signed=True)

    @workflow.update
    async def authorise_payout(self, inp: AuthorisePayoutInput) -> PayoutResult:
        async with self._lock:
            signed = self._unused_assertion(inp)
            t = self._validate_payout(Step.AUTHORISE_PAYOUT, inp)
            return await self._payout_step(Step.AUTHORISE_PAYOUT, inp, t, TrancheStatus.AUTHORISED, signed)

    @authorise_payout.validator
    def _validate_authorise_payout(self, inp: AuthorisePayoutInput) -> None:
        self._validate_payout(Step.AUTHORISE_PAYOUT, inp, signed=True)

    @workflow.update
    async def release_payout(self, inp: ReleasePayoutInput) -> PayoutResult:
        """Release to the payment channel. Returns once the channel has the instruction; the money counts
        as paid only when the channel confirms (signal `payment_result`)."""
        async with self._lock:
            signed = self._unused_assertion(inp)
            t = self._validate_payout(Step.RELEASE_PAYOUT, inp)
            result = await self._payout_step(Step.RELEASE_PAYOUT, inp, t, TrancheStatus.RELEASED, signed)
            await self._submit(self._tranche(t.n))
            return result

    @release_payout.validator
    def _validate_release_payout(self, inp: ReleasePayoutInput) -> None:
        self._validate_payout(Step.RELEASE_PAYOUT, inp, signed=True)

    @workflow.signal
    async def payment_result(self, *args: object) -> None:
        """The channel says it has an answer. Only a wake-up: the answer is read from the channel itself.

        Anyone who reaches Temporal can signal, with no input or several: the handler takes whatever comes and
        ignores what is not one notice, instead of failing the workflow task on a missing argument (which
        would fail again on every retry and wedge the household)."""
        notice = _one_notice(args)
        if notice is None:
            workflow.logger.warning("payment notice ignored: not one notice", extra={"arguments": len(args)})
            return
        async with self._lock:
            t = self._tranche_paying(notice.payment_id)
            if t is None:
                workflow.logger.info("payment notice ignored", extra={"payment_id": notice.payment_id})
                return
            if workflow.patched(SIGNED_PATCH):
                await self._settle(t, ACTIVITY_DEADLINE)
                return
            check = await workflow.execute_activity_method(
                PaymentActivities.check_payment,
                notice.payment_id,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
            await self._record_answer(t, check)

    def _validate_payout(self, step: Step, inp: PayoutStepInput, *, signed: bool = False) -> TrancheState:
        """The rules for a payout step; `signed` (validators): its assertion first."""
        if signed:
            self._authenticate(step, inp)
        asked = inp.tranche if isinstance(inp, PayoutInput) else None
        milestone = inp.milestone if isinstance(inp, ReportProgressInput) else None
        try:
            tranche = rules.payout_tranche(step, self._state.tranches, asked, milestone)
            rules.check_actor(
                step=step,
                household=self._household,
                policy=self._policy,
                actor=inp.actor,
                evidence=inp.evidence,
                timeline=self._state.timeline,
                tranche=tranche,
                imported_by=self._state.imported_by,
            )
            return rules.check_payout(
                step=step,
                stage=self._state.stage,
                household_code=self._household.code,
                tranches=self._state.tranches,
                tranche=asked,
                milestone=milestone,
                actor=inp.actor,
            )
        except Refusal as v:
            raise v.application_error() from None

    async def _payout_step(
        self,
        step: Step,
        inp: PayoutStepInput,
        t: TrancheState,
        status: TrancheStatus,
        signed: tuple[ActionAssertion | None, dict | None],
    ) -> PayoutResult:
        payment_id = None
        update: dict[str, object] = {"status": status}
        if step is Step.AUTHORISE_PAYOUT:
            update |= {"authorised_by": inp.actor.user_id, "released_by": None}
        if step is Step.RELEASE_PAYOUT:
            attempt = t.attempts + 1
            payment_id = self._payment_id(t.n, attempt)
            update |= {
                "released_by": inp.actor.user_id,
                "attempts": attempt,
                "payment_id": payment_id,
                "released_at": workflow.now(),
                "escalations": 0,
                "inquiries": 0,
            }
        next_agency = {
            Step.REPORT_PROGRESS: self._policy.finance_agency,
            Step.AUTHORISE_PAYOUT: self._policy.rule(Step.RELEASE_PAYOUT).responsible_agency,
        }.get(step)
        assertion, signed_input = signed
        milestone: Milestone | None = inp.milestone if isinstance(inp, ReportProgressInput) else None
        batch_id = inp.batch_id if isinstance(inp, PayoutInput) else None
        seq, outcome = await self._transition(
            StepFacts(
                step,
                inp.actor,
                inp.evidence,
                batch_id and f"batch {batch_id}",  # what the audit row and the timeline have always said
                self._state.stage,
                money=MoneyPlan(tranche_updates={t.n: status.value}),
                tranche=t.n,
                payment_id=payment_id,
                milestone=milestone.value if milestone else None,
                next_agency=next_agency,
                assertion=assertion,
                signed_input=signed_input,
                batch_id=batch_id if batch_id and workflow.patched(BATCH_ID_PATCH) else None,
            )
        )
        self._set_tranche(t.n, **update)
        return PayoutResult(
            household_code=self._household.code,
            step=step.value,
            tranche=t.n,
            amount=t.amount,
            status=status,
            seq=seq,
            audit_hash=outcome.audit_hash,
            payment_id=payment_id,
        )

    def _payment_id(self, n: int, attempt: int) -> str:
        # The end-to-end id: per household, tranche and attempt (and per allocation, after a re-allocation).
        allocations = sum(1 for e in self._state.timeline if e.step is Step.ALLOCATE)
        return f"{self._household.code}-A{allocations}-T{n}-{attempt}"

    async def _submit(self, t: TrancheState) -> None:
        """Have the channel pay the tranche's instruction in flight. Since signed actions the activity is
        local and takes only the payment id: it builds the instruction from PostgreSQL; before, a regular
        activity was given the workflow's copy (its answer is read untyped: then a bare True)."""
        try:
            if workflow.patched(SIGNED_PATCH):
                await workflow.execute_local_activity_method(
                    PaymentActivities.submit_payment,
                    PaymentRequest(
                        payment_id=t.payment_id or "",
                        household_code=self._household.code,
                        amount=t.amount,
                        payee=self._state.payee or self._household.head_of_household,
                    ),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    schedule_to_close_timeout=SUBMIT_DEADLINE,
                    retry_policy=ACTIVITY_RETRY,
                )
            else:
                await workflow.execute_activity(
                    "submit_payment",
                    self._instruction(t),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    schedule_to_close_timeout=SUBMIT_DEADLINE,
                    retry_policy=ACTIVITY_RETRY,
                )
        except (ActivityError, ApplicationError) as err:
            # Released and recorded; the inquiries and the confirmation timeout find the channel never got it
            # and send again (and tell Finance). A refusal (the terms in PostgreSQL are not the workflow's:
            # `InstructionMismatch`) sends nothing and must not undo the recorded release.
            cause = err.cause if isinstance(err, ActivityError) else err
            workflow.logger.warning("payment not handed to the channel", extra={"error": str(cause or err)})

    def _instruction(self, t: TrancheState) -> PaymentInstruction:
        """The workflow's copy of the instruction: what histories before signed actions sent; since then it
        only names the instruction to escalate (the activity reads the terms from PostgreSQL)."""
        return PaymentInstruction(
            payment_id=t.payment_id or "",
            workflow_id=workflow.info().workflow_id,
            household_code=self._household.code,
            tranche=t.n,
            attempt=t.attempts,
            amount=t.amount,
            payee=self._household.head_of_household,
            released_by=t.released_by or "",
        )

    async def _record_answer(self, t: TrancheState, check: PaymentCheck) -> None:
        """Record the channel's answer from a signal or a timer, where a refusal has no caller to go back to.
        One case: a worker crashed after committing an officer's step whose update never reached the history;
        that step holds this sequence number until the officer's retry takes it (the activity hands back the
        committed row). The tranche stays released and the next inquiry records the answer, instead of the
        refusal failing the household's workflow."""
        try:
            await self._apply_payment(t, check)
        except ApplicationError as err:
            workflow.logger.warning(
                "payment answer not recorded yet", extra={"tranche": t.n, "error": err.message, "type": err.type}
            )

    async def _apply_payment(self, t: TrancheState, check: PaymentCheck) -> None:
        """Histories before `settle_answer`: record the answer check_payment brought, with the channel's
        signature (record_transition verifies it: a hand-completed answer records nothing)."""
        status = check.status
        retry = t.attempts < self._policy.payment_max_attempts
        if status.state == "confirmed":
            await self._transition(
                StepFacts(
                    Step.PAYMENT_CONFIRMED,
                    check.channel_actor,
                    [status.bank_ref or status.payment_id],
                    None,
                    self._state.stage,
                    money=MoneyPlan(
                        MoneyOp.POST,
                        transfer_ids=[p.transfer_id for p in t.pieces],
                        tranche_updates={t.n: TrancheStatus.PAID.value},
                    ),
                    tranche=t.n,
                    payment_id=status.payment_id,
                    assertion=status.assertion,
                    signed_input=status.answer,
                )
            )
        elif status.state == "failed":
            after = TrancheStatus.RELEASED if retry else TrancheStatus.DUE
            await self._transition(
                StepFacts(
                    Step.PAYMENT_FAILED,
                    check.channel_actor,
                    [],
                    failure_reason(status.reason, t.attempts, retry),
                    self._state.stage,
                    money=MoneyPlan(tranche_updates={t.n: after.value}),
                    tranche=t.n,
                    payment_id=status.payment_id,
                    next_agency=None if retry else self._policy.finance_agency,
                    assertion=status.assertion,
                    signed_input=status.answer,
                )
            )
        else:
            return
        await self._answered(t, status.state == "confirmed", retry)

    async def _answered(self, t: TrancheState, confirmed: bool, retry: bool) -> None:
        """The tranche after its answer was recorded: paid; or sent again as a new attempt; or due again."""
        if confirmed:
            self._set_tranche(t.n, status=TrancheStatus.PAID)
        elif retry:
            attempt = t.attempts + 1
            self._set_tranche(
                t.n,
                attempts=attempt,
                payment_id=self._payment_id(t.n, attempt),
                released_at=workflow.now(),
                escalations=0,
                inquiries=0,
            )
            await self._submit(self._tranche(t.n))
        else:
            self._set_tranche(t.n, status=TrancheStatus.DUE, authorised_by=None, released_by=None)

    async def _settle(self, t: TrancheState, deadline: timedelta) -> str | None:
        """Ask the channel and record its final answer in one local activity (`settle_answer`: the bank's
        signature verified, the step written in the same transaction), then apply it. Returns the channel's
        state, None when the answer was not had or not recorded (a later inquiry asks again)."""
        retry = t.attempts < self._policy.payment_max_attempts
        req = SettleRequest(
            workflow_id=workflow.info().workflow_id,
            household_code=self._household.code,
            seq=len(self._state.timeline) + 1,
            stage=self._state.stage,
            at=workflow.now(),
            tranche=t.n,
            attempts=t.attempts,
            payment_id=t.payment_id or "",
            transfer_ids=[p.transfer_id for p in t.pieces],
            retry=retry,
            finance_agency=self._policy.finance_agency,
            support_type=self._household.support_type,
            beneficiary_group=self._household.beneficiary_group,
        )
        try:
            settled = await workflow.execute_local_activity_method(
                PaymentActivities.settle_answer,
                req,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                schedule_to_close_timeout=deadline,
                retry_policy=ACTIVITY_RETRY,
            )
        except (ActivityError, ApplicationError) as err:  # a refusal (a local activity's may come unwrapped)
            cause = err.cause if isinstance(err, ActivityError) else err
            workflow.logger.warning(
                "payment answer not recorded",
                extra={"tranche": t.n, "error": str(cause or err), "type": getattr(cause, "type", None)},
            )
            return None
        outcome = settled.outcome
        if outcome is not None and outcome.record is not None:
            self._took(outcome.record, outcome)
            await self._answered(t, outcome.record.step is Step.PAYMENT_CONFIRMED, retry)
        return settled.status.state

    def _next_payment_due(self) -> tuple[datetime, int, bool] | None:
        """When the next released tranche is due for attention: (at, tranche, True for a status inquiry,
        False for an escalation to Finance)."""
        period = timedelta(hours=self._policy.payment_confirm_hours)
        released = [t for t in self._state.tranches if t.status is TrancheStatus.RELEASED and t.released_at]
        if not released:
            return None
        dues = [(t.released_at + period * (t.escalations + 1), t.n, False) for t in released]
        if workflow.patched(INQUIRY_PATCH):
            for t in released:
                minutes = self._policy.inquiry_offset_minutes(t.inquiries + 1)
                if minutes is not None:
                    dues.append((t.released_at + timedelta(minutes=minutes), t.n, True))
        return min(dues)

    async def _inquire(self, n: int) -> None:
        """Ask the channel about a released payment it has not answered: apply its answer, or send the same
        instruction again if it never received it."""
        async with self._lock:
            t = self._tranche(n)
            if t.status is not TrancheStatus.RELEASED or t.released_at is None:
                return
            self._set_tranche(n, inquiries=t.inquiries + 1)
            if workflow.patched(SIGNED_PATCH):
                if await self._settle(self._tranche(n), INQUIRY_DEADLINE) == "unknown":
                    await self._submit(self._tranche(n))
                return
            try:
                check = await workflow.execute_activity_method(
                    PaymentActivities.check_payment,
                    t.payment_id or "",
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    schedule_to_close_timeout=INQUIRY_DEADLINE,
                    retry_policy=ACTIVITY_RETRY,
                )
            except ActivityError as err:
                workflow.logger.warning("payment inquiry unanswered", extra={"tranche": n, "error": str(err.cause)})
                return
            if check.status.state in ("confirmed", "failed"):
                await self._record_answer(self._tranche(n), check)
            elif check.status.state == "unknown":
                await self._submit(self._tranche(n))

    async def _escalate(self, n: int) -> None:
        async with self._lock:
            t = self._tranche(n)
            if t.status is not TrancheStatus.RELEASED or t.released_at is None:
                return
            escalation = t.escalations + 1
            signed = workflow.patched(SIGNED_PATCH)
            run = workflow.execute_local_activity_method if signed else workflow.execute_activity_method
            check = await run(
                PaymentActivities.escalate_payment,
                EscalationRecord(
                    instruction=self._instruction(t),
                    overdue_hours=int((workflow.now() - t.released_at).total_seconds() // 3600),
                    escalation=escalation,
                    finance_agency=self._policy.finance_agency,
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
            self._set_tranche(n, escalations=escalation)
            self._state = self._state.model_copy(update={"payment_escalations": self._state.payment_escalations + 1})
            workflow.logger.warning("payment escalated", extra={"tranche": n, "channel": check.status.state})
            if check.status.state in ("confirmed", "failed"):
                if signed:  # asked and recorded as the bank signed it
                    await self._settle(self._tranche(n), ACTIVITY_DEADLINE)
                else:
                    await self._record_answer(self._tranche(n), check)

    def _tranche(self, n: int) -> TrancheState:
        return next(t for t in self._state.tranches if t.n == n)

    def _tranche_paying(self, payment_id: str) -> TrancheState | None:
        return next(
            (t for t in self._state.tranches if t.payment_id == payment_id and t.status is TrancheStatus.RELEASED),
            None,
        )

    def _set_tranche(self, n: int, **changes: object) -> None:
        self._state = self._state.model_copy(
            update={"tranches": [t.model_copy(update=changes) if t.n == n else t for t in self._state.tranches]}
        )

    # ---------------------------------------------------------------- the one path every step takes

    def _validate(self, step: Step, inp: ActionInput, *, signed: bool = False) -> rules.Target:
        """The rules for a lifecycle step; `signed` (validators): its assertion first."""
        if signed:
            self._authenticate(step, inp)
        try:
            target = rules.check_action(
                step=step,
                stage=self._state.stage,
                household=self._household,
                policy=self._policy,
                action=inp,
                timeline=self._state.timeline,
                imported_by=self._state.imported_by,
                review=self._review(),
            )
            if step is Step.VERIFY:
                rules.check_eligibility(getattr(inp, "findings", None), self._policy, self._household.code)
            rules.check_money(step, target, self._state.tranches, self._household.code)
            return target
        except Refusal as v:
            raise v.application_error() from None

    async def _act(self, step: Step, inp: ActionInput, result_type: type[R]) -> R:
        async with self._lock:
            assertion, signed = self._unused_assertion(inp)
            target = self._validate(step, inp)
            state = self._state
            plan_tranches = step is Step.ALLOCATE and workflow.patched(TRANCHES_PATCH)
            plan = self._money_for(step, target.to_stage)
            next_step = FORWARD.get(target.to_stage)
            source = inp.source if isinstance(inp, AllocateInput) else None
            seq, outcome = await self._transition(
                StepFacts(
                    step,
                    inp.actor,
                    inp.evidence,
                    inp.reason,
                    target.to_stage,
                    money=plan,
                    source=source,
                    plan_tranches=plan_tranches,
                    next_agency=self._policy.rule(next_step[0]).responsible_agency if next_step else None,
                    assertion=assertion,
                    signed_input=signed,
                )
            )
            self._reminders_in_stage = 0
            if step is Step.VERIFY:
                self._state = self._state.model_copy(update={"findings": getattr(inp, "findings", None)})
            if step is Step.ALLOCATE:
                if outcome.allocation:
                    self._state = self._state.model_copy(
                        update={
                            "tranches": [
                                TrancheState(
                                    n=a.tranche,
                                    percent=a.percent,
                                    milestone=a.milestone,
                                    amount=a.amount,
                                    pieces=a.pieces,
                                )
                                for a in outcome.allocation
                            ]
                        }
                    )
                else:
                    self._state = self._state.model_copy(update={"reservation_id": outcome.transfer_id})
            elif plan.op is MoneyOp.VOID or plan.op is MoneyOp.POST:
                self._state = self._state.model_copy(update={"reservation_id": None})
            for n, status in plan.tranche_updates.items():
                self._set_tranche(n, status=TrancheStatus(status))
            # Each result model declares which of these it reports.
            money_facts = {
                "amount": self._state.paid if step is Step.SETTLE and outcome.amount is None else outcome.amount,
                "transfer_id": outcome.transfer_id,
                "source": outcome.sources or source,
                "released": (outcome.amount or 0) if plan.op is MoneyOp.VOID else 0,
            }
            extra = {k: v for k, v in money_facts.items() if k in result_type.model_fields}
            return result_type(
                household_code=self._household.code,
                step=step,
                from_stage=state.stage,
                to_stage=target.to_stage,
                seq=seq,
                at=self._state.timeline[-1].at,
                audit_hash=outcome.audit_hash,
                **extra,
            )

    async def _transition(self, facts: StepFacts) -> tuple[int, TransitionOutcome]:
        """Record one transition through the activity, then (only then) change the state."""
        state = self._state
        seq = len(state.timeline) + 1
        record = TransitionRecord(
            idempotency_key=f"{workflow.info().workflow_id}#{seq}",
            workflow_id=workflow.info().workflow_id,
            household_code=self._household.code,
            seq=seq,
            step=facts.step,
            from_stage=state.stage,
            to_stage=facts.to_stage,
            at=workflow.now(),
            actor=facts.actor,
            evidence=facts.evidence,
            reason=facts.reason,
            money=facts.money.op,
            source=facts.source,
            reservation_id=facts.money.reservation_id,
            transfer_ids=facts.money.transfer_ids,
            plan_tranches=facts.plan_tranches,
            tranche=facts.tranche,
            tranche_updates=facts.money.tranche_updates,
            payment_id=facts.payment_id,
            milestone=facts.milestone,
            support_type=self._household.support_type,
            beneficiary_group=self._household.beneficiary_group,
            next_agency=facts.next_agency,
            assertion=facts.assertion,
            signed_input=facts.signed_input,
            policy_version=self._policy.version,
            batch_id=facts.batch_id,
            moved_to=facts.moved_to,
            moved_policy=facts.moved_policy,
        )
        try:
            run = (
                workflow.execute_local_activity_method
                if workflow.patched(LOCAL_RECORD_PATCH)
                else workflow.execute_activity_method
            )
            outcome = await run(
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
                f"step {facts.step.value!r} was not recorded: {cause or err}", type="NotRecorded", non_retryable=True
            ) from None

        self._took(record, outcome)
        return seq, outcome

    def _took(self, record: TransitionRecord, outcome: TransitionOutcome) -> None:
        """The state after a recorded step (the recording activity succeeded; only then)."""
        if record.assertion is not None:
            self._nonces.add(record.assertion.nonce)  # taken once: the validators refuse it from now on
        state = self._state
        step, actor, to_stage, money, source = record.step, record.actor, record.to_stage, record.money, record.source
        seq, evidence, reason, tranche = record.seq, record.evidence, record.reason, record.tranche
        # The time the database committed: a step retried after a worker crash keeps its first time.
        at = outcome.at or record.at
        update: dict[str, object] = {
            **money_effect(
                money,
                amount=outcome.amount,
                source=outcome.sources or source,
                reserved_before=state.reserved,
                paid_before=state.paid,
                released=outcome.released,
                entitlement=outcome.entitlement,
            ),
        }
        if to_stage is Stage.VERIFICATION and state.stage is not Stage.VERIFICATION:
            update["posting"] = None  # reviewed again: the list is posted again before approval
        if to_stage != state.stage:
            update |= {"stage": to_stage, "stage_since": at}
        entry = TimelineEntry(
            seq=seq,
            step=step,
            from_stage=state.stage,
            to_stage=to_stage,
            at=at,
            user_id=actor.user_id,
            role=actor.role,
            agency=actor.agency,
            evidence=evidence,
            reason=reason,
            amount=outcome.amount,
            audit_hash=outcome.audit_hash,
            tranche=tranche,
        )
        update["timeline"] = [*state.timeline, entry]
        changed_stage = to_stage != state.stage
        self._state = state.model_copy(update=update)
        self._changes += 1
        if changed_stage:
            workflow.upsert_search_attributes(search_attributes.updates(self._household, to_stage))
        workflow.logger.info(
            "step taken", extra={"step": step.value, "to_stage": to_stage.value, "user": actor.user_id}
        )

    def _money_for(self, step: Step, to_stage: Stage) -> MoneyPlan:
        """The money operation a lifecycle step makes: the op, the legacy reservation, the tranche pieces and the
        tranches' new statuses."""
        reservation = self._state.reservation_id
        if step is Step.ALLOCATE:
            return MoneyPlan(MoneyOp.RESERVE)
        if step is Step.ACCEPT:
            # The house is finished: every tranche still waiting for a milestone is now due.
            due = {t.n: TrancheStatus.DUE.value for t in self._state.tranches if t.status is TrancheStatus.PLANNED}
            return MoneyPlan(tranche_updates=due)
        if reservation is not None:  # allocated before tranches: one reservation, posted whole at settlement
            if step is Step.SETTLE:
                return MoneyPlan(MoneyOp.POST, reservation_id=reservation)
            if to_stage not in FUNDED_STAGES:
                return MoneyPlan(MoneyOp.VOID, reservation_id=reservation)
            return MoneyPlan()
        if to_stage in FUNDED_STAGES or step is Step.SETTLE:
            return MoneyPlan()
        # Cancelled, or sent back before fund allocation: what is not paid goes back to its sources.
        open_tranches = [t for t in self._state.tranches if t.status not in (TrancheStatus.PAID, TrancheStatus.VOIDED)]
        pieces = [p.transfer_id for t in open_tranches for p in t.pieces]
        if not pieces:
            return MoneyPlan()
        return MoneyPlan(
            MoneyOp.VOID, transfer_ids=pieces, tranche_updates={t.n: TrancheStatus.VOIDED.value for t in open_tranches}
        )
