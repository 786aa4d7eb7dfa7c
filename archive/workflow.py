"""The history archive's sweep: copies every closed household and payout-batch history out of Temporal into
the archive, then has the witness sign a checkpoint. A Temporal schedule (archive/schedule.py, kept by the
worker) runs it every ARCHIVE_INTERVAL_SECONDS; `starter.py archive sweep` runs it now.

It finds what to archive by asking Temporal's visibility for every closed run it still holds and the archive
which of those it has, so it keeps no watermark that a crash could leave wrong: a run closed while the
worker was down, or whose copy was interrupted, is simply still missing at the next sweep.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from archive.sweep import ArchiveActivities
    from models.archive import ArchiveSweepInput, ArchiveSweepResult

RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1))
ROUNDS = 20  # rounds of `limit` histories per run; what is left waits for the next scheduled run


@workflow.defn
class HistoryArchiveWorkflow:
    @workflow.run
    async def run(self, inp: ArchiveSweepInput) -> ArchiveSweepResult:
        total = ArchiveSweepResult()
        for _ in range(ROUNDS):
            got = await workflow.execute_activity_method(
                ArchiveActivities.archive_closed,
                inp,
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=RETRY,
            )
            total.closed_seen = got.closed_seen
            total.archived_now += got.archived_now
            total.already = got.already
            total.waiting = got.waiting
            total.failed = got.failed
            if got.waiting <= len(got.failed) or not got.archived_now:
                break  # nothing left, or only runs that fail (named in the result; the next run tries again)
        if inp.checkpoint:
            total.checkpoint_seq = await workflow.execute_activity_method(
                ArchiveActivities.write_checkpoint,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RETRY,
            )
        return total
