"""A payout batch: Finance authorises (or the paying unit releases) one tranche for hundreds of
households in one command, by district, by decision or by a list of codes.

The batch fans out to the households' own workflows with bounded concurrency. Each household's
validators decide; a refusal is that household's failure, not the batch's. Progress is a query. Running
the same batch again is safe: households already past the step are reported as skipped.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.batches import DONE_ALREADY, BatchActivities
    from models.finance import (
        ApplyPayoutInput,
        BatchItem,
        BatchProgress,
        PayoutBatchInput,
        PayoutBatchResult,
        PayoutCandidate,
        SelectPayoutsInput,
        TrancheStatus,
    )

# A re-run skips the households the read model shows done, instead of asking each workflow.
SKIP_FROM_READ_MODEL = "batch-skip-from-read-model"
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=20), maximum_attempts=5)


@workflow.defn
class PayoutBatchWorkflow:
    @workflow.init
    def __init__(self, inp: PayoutBatchInput) -> None:
        self._progress = BatchProgress()

    @workflow.run
    async def run(self, inp: PayoutBatchInput) -> PayoutBatchResult:
        # The signed batch goes with every activity: the selection refuses a batch no front door signed, and
        # each household verifies the batch's assertion and that it covers its step.
        select = SelectPayoutsInput(selection=inp.selection, tranche=inp.tranche, actor=inp.actor, batch=inp)
        if workflow.patched(SKIP_FROM_READ_MODEL):
            candidates = await workflow.execute_activity_method(
                BatchActivities.select_payout_candidates,
                select,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=RETRY,
            )
        else:  # batches started before: every household is asked
            codes = await workflow.execute_activity_method(
                BatchActivities.select_payouts, select, start_to_close_timeout=timedelta(minutes=1), retry_policy=RETRY
            )
            candidates = [PayoutCandidate(household_code=c, status=TrancheStatus.PLANNED) for c in codes]
        codes = [c.household_code for c in candidates]
        self._progress = BatchProgress(total=len(codes))
        gate = asyncio.Semaphore(inp.concurrency)
        items: dict[str, BatchItem] = {}
        done_before = {c.household_code: c.status for c in candidates if c.status in DONE_ALREADY[inp.action]}

        async def one(code: str) -> None:
            if code in done_before:  # a re-run: reported, not sent again
                item = BatchItem(
                    household_code=code,
                    outcome="skipped",
                    rule="AlreadyDone",
                    message=f"tranche {inp.tranche} is {done_before[code].value}",
                )
                self._count(items, item)
                return
            async with gate:
                try:
                    item = await workflow.execute_activity_method(
                        BatchActivities.apply_payout,
                        ApplyPayoutInput(
                            household_code=code,
                            action=inp.action,
                            tranche=inp.tranche,
                            actor=inp.actor,
                            evidence=inp.evidence,
                            batch_id=inp.batch_id,
                            batch=inp,
                        ),
                        start_to_close_timeout=timedelta(minutes=2),
                        retry_policy=RETRY,
                    )
                except ActivityError as err:
                    item = BatchItem(household_code=code, outcome="failed", rule="Error", message=str(err.cause or err))
            self._count(items, item)

        await asyncio.gather(*(one(c) for c in codes))
        ordered = [items[c] for c in codes]
        workflow.logger.info("batch finished", extra=self._progress.model_dump())
        return PayoutBatchResult(
            batch_id=inp.batch_id,
            action=inp.action,
            tranche=inp.tranche,
            progress=self._progress,
            amount=sum(i.amount for i in ordered if i.outcome == "done"),
            items=ordered,
        )

    def _count(self, items: dict[str, BatchItem], item: BatchItem) -> None:
        items[item.household_code] = item
        self._progress = self._progress.model_copy(update={item.outcome: getattr(self._progress, item.outcome) + 1})

    @workflow.query
    def progress(self) -> BatchProgress:
        return self._progress
