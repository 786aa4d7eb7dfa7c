"""The archive sweep's activities: copy closed histories out of Temporal, then sign a witness checkpoint.

Each history is its own write (one INSERT ... ON CONFLICT DO NOTHING keyed by the run id), so an attempt
cut short by a crash keeps what it wrote and the retry, or the next sweep, writes the rest; nothing is
written twice. A history is read from Temporal as stored (payloads sealed) and archived only once its run
is closed: its last event closes the execution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecution

from archive.source import ALL_WORKFLOWS
from archive.store import HistoryArchive, archived
from auditor.archive import history_key_ids
from core import metrics
from core.signing import SigningRing
from models.archive import ArchiveSweepInput, ArchiveSweepResult

log = structlog.get_logger("archive")

CLOSED = f"({ALL_WORKFLOWS}) AND ExecutionStatus != 'Running'"
CLOSING_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}
CHUNK = 500  # run ids asked of the archive per query


@dataclass(frozen=True)
class Backlog:
    """Closed runs Temporal holds, and those of them the archive has not."""

    closed: list[WorkflowExecution]
    missing: list[WorkflowExecution]


async def backlog(
    client: Client, archive: HistoryArchive, *, task_queue: str | None = None, alive: Callable[[], None] = lambda: None
) -> Backlog:
    """`alive` is called every CHUNK runs (the sweep's heartbeat: a province's listing takes a while)."""
    query = CLOSED if task_queue is None else f"{CLOSED} AND TaskQueue = '{task_queue.replace(chr(39), '')}'"
    closed = []
    async for wf in client.list_workflows(query):
        if wf.close_time is not None:
            closed.append(wf)
        if len(closed) % CHUNK == 0:
            alive()
    have: set[str] = set()
    for start in range(0, len(closed), CHUNK):
        have |= await archive.archived_runs([wf.run_id for wf in closed[start : start + CHUNK]])
        alive()
    missing = sorted((wf for wf in closed if wf.run_id not in have), key=lambda wf: wf.close_time)
    return Backlog(closed, missing)


async def archive_run(
    client: Client, archive: HistoryArchive, wf: WorkflowExecution, ring: SigningRing | None = None
) -> bool:
    """Copy one closed run's history, signed with the witness's `ring` when there is one; True when it was
    new to the archive."""
    history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
    if not history.events or history.events[-1].event_type not in CLOSING_EVENTS:
        raise RuntimeError(f"{wf.id} run {wf.run_id}: listed as closed but its history does not end closed")
    copy = archived(
        wf.id,
        wf.run_id,
        wf.workflow_type,
        wf.status.name if wf.status else "UNKNOWN",
        wf.start_time,
        wf.close_time,
        history,
        history_key_ids(history),
    )
    return await archive.put(copy.signed_by(ring) if ring else copy)


class ArchiveActivities:
    """`archive` should trust the witness's public keys (runtime/worker.make_worker opens it so): then a row
    the witness did not sign does not count as a run's copy, and the run is copied again, signed."""

    def __init__(self, client: Client, archive: HistoryArchive, witness=None) -> None:
        self._client = client
        self._archive = archive
        self._witness = witness  # archive.witness.Witness, or None when the worker has no witness key
        self._ring = witness.ring if witness is not None else None

    @activity.defn
    async def archive_closed(self, inp: ArchiveSweepInput) -> ArchiveSweepResult:
        found = await backlog(
            self._client, self._archive, task_queue=inp.task_queue, alive=lambda: activity.heartbeat("listing")
        )
        new = 0
        failed: list[str] = []
        todo: Sequence[WorkflowExecution] = found.missing
        for i, wf in enumerate(todo):
            if new >= inp.limit:
                break  # the rest in the workflow's next round; a run that fails does not count, nor hold back
            try:
                new += await archive_run(self._client, self._archive, wf, self._ring)
            except Exception as err:  # noqa: BLE001 (one run's trouble must not hold back the others)
                log.error("history_not_archived", workflow_id=wf.id, run_id=wf.run_id, error=repr(err))
                failed.append(f"{wf.id} {wf.run_id}: {err}")
            activity.heartbeat(i + 1)
        waiting = len(found.missing) - new
        metrics.backlog("archive", waiting)
        if todo:
            log.info("histories_archived", archived=new, waiting=waiting, failed=len(failed), closed=len(found.closed))
        return ArchiveSweepResult(
            closed_seen=len(found.closed),
            archived_now=new,
            waiting=waiting,
            failed=failed,
            already=len(found.closed) - len(found.missing),
        )

    @activity.defn
    async def write_checkpoint(self) -> int | None:
        """Sign a checkpoint when anything changed since the last one (or it is due); its seq, or None."""
        if self._witness is None:
            return None
        made = await self._witness.checkpoint()
        return made.seq if made else None
