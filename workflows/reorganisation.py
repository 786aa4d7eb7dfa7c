"""A reorganisation of local government applied to every household in flight: one signed batch, taken household
by household through each one's own `move` update, so every household's validator and recording activity
decide exactly as for a single step.

Bounded: pages of households (by code), at most `concurrency` moves at a time, and a continue-as-new once the
history grows long. Resumable: a crash resumes the run; a run started again selects only the households the
register does not show moved (each household also refuses a second move). Progress is a query.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.reorganisation import ReorganisationActivities
    from models.finance import BatchItem, BatchProgress
    from models.reorganisation import (
        ApplyMoveInput,
        MoveCandidate,
        ReorganiseResult,
        ReorganiseRun,
        SelectMovesInput,
    )

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=20), maximum_attempts=5)
PAGE = 500
MAX_FAILED_LISTED = 200  # failures named in the result (all are counted): the result stays far below 2 MB
HISTORY_LIMIT = 20_000  # events before the run continues as new (Temporal's hard limit is 51,200)


@workflow.defn
class ReorganisationWorkflow:
    @workflow.init
    def __init__(self, run: ReorganiseRun) -> None:
        self._progress = run.progress
        self._failed = list(run.failed)

    @workflow.run
    async def run(self, run: ReorganiseRun) -> ReorganiseResult:
        batch, after = run.batch, run.after
        gate = asyncio.Semaphore(batch.concurrency)
        while True:
            page = await workflow.execute_activity_method(
                ReorganisationActivities.select_moves,
                SelectMovesInput(batch=batch, after=after, limit=PAGE),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RETRY,
            )
            if page.last is None:
                break
            self._progress = self._progress.model_copy(
                update={"total": self._progress.total + len(page.candidates) + len(page.unmapped)}
            )
            for item in page.unmapped:
                self._count(item)

            async def one(c: MoveCandidate) -> None:
                async with gate:
                    try:
                        item = await workflow.execute_activity_method(
                            ReorganisationActivities.apply_move,
                            ApplyMoveInput(candidate=c, batch=batch),
                            start_to_close_timeout=timedelta(minutes=2),
                            retry_policy=RETRY,
                        )
                    except ActivityError as err:
                        item = BatchItem(
                            household_code=c.household_code,
                            outcome="failed",
                            rule="Error",
                            message=str(err.cause or err),
                        )
                self._count(item)

            await asyncio.gather(*(one(c) for c in page.candidates))
            after = page.last
            if (
                workflow.info().get_current_history_length() > HISTORY_LIMIT
                or workflow.info().is_continue_as_new_suggested()
            ):
                workflow.continue_as_new(
                    ReorganiseRun(batch=batch, after=after, progress=self._progress, failed=self._failed)
                )
        workflow.logger.info("reorganisation finished", extra=self._progress.model_dump())
        return ReorganiseResult(
            batch_id=batch.batch_id, basis=batch.basis, progress=self._progress, failed=self._failed
        )

    def _count(self, item: BatchItem) -> None:
        if item.outcome == "failed" and len(self._failed) < MAX_FAILED_LISTED:
            self._failed.append(item)
        self._progress = self._progress.model_copy(update={item.outcome: getattr(self._progress, item.outcome) + 1})

    @workflow.query
    def progress(self) -> BatchProgress:
        return self._progress
