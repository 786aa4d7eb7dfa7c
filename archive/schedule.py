"""The schedule that runs the archive sweep, kept by every worker at start (idempotent), and the numbers
`stack status` and `archive status` show: retention, histories archived, closed histories still waiting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, UpdateNamespaceRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from archive.store import ArchiveCounts, HistoryArchive
from archive.sweep import backlog
from archive.workflow import HistoryArchiveWorkflow
from core.settings import Settings
from models.archive import ArchiveSweepInput

SCHEDULE_ID = "history-archive"


def _schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            HistoryArchiveWorkflow.run,
            ArchiveSweepInput(),
            id=f"{SCHEDULE_ID}-sweep",
            task_queue=settings.temporal_task_queue,
            execution_timeout=timedelta(hours=1),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.archive_interval_seconds))]),
        # One sweep at a time; a missed one (the server was down) runs once when it is back.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=1)),
    )


async def ensure_schedule(client: Client, settings: Settings) -> bool:
    """Create the sweep's schedule, or bring its interval and task queue in line with the settings.
    True when it was created."""
    try:
        # The first sweep runs now: what closed while no worker ran is copied without waiting an interval.
        await client.create_schedule(SCHEDULE_ID, _schedule(settings), trigger_immediately=True)
        return True
    except ScheduleAlreadyRunningError:
        pass
    wanted = _schedule(settings)

    def same(input: ScheduleUpdateInput) -> ScheduleUpdate | None:
        current = input.description.schedule
        if (
            current.spec.intervals == wanted.spec.intervals
            and getattr(current.action, "task_queue", None) == settings.temporal_task_queue
        ):
            return None
        return ScheduleUpdate(schedule=wanted)

    await client.get_schedule_handle(SCHEDULE_ID).update(same)
    return False


async def set_retention(client: Client, namespace: str, keep: timedelta) -> timedelta:
    """Set the namespace's workflow execution retention; returns what the server now holds."""
    ttl = Duration()
    ttl.FromTimedelta(keep)
    await client.workflow_service.update_namespace(
        UpdateNamespaceRequest(
            namespace=namespace,
            config=NamespaceConfig(workflow_execution_retention_ttl=ttl),
        )
    )
    return await retention(client, namespace)


async def retention(client: Client, namespace: str) -> timedelta:
    described = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    return described.config.workflow_execution_retention_ttl.ToTimedelta()


@dataclass(frozen=True)
class ArchiveStatus:
    retention: timedelta
    counts: ArchiveCounts
    closed_in_temporal: int
    waiting: int  # closed runs Temporal holds that the archive has not yet copied
    oldest_waiting: datetime | None = None  # when the longest-waiting of them closed

    @property
    def at_risk(self) -> bool:
        """A run has waited more than half the retention: the sweep is not keeping up (or not running)."""
        return self.oldest_waiting is not None and datetime.now(UTC) - self.oldest_waiting > self.retention / 2


async def archive_status(client: Client, archive: HistoryArchive, namespace: str) -> ArchiveStatus:
    found = await backlog(client, archive)
    oldest = min((wf.close_time for wf in found.missing), default=None)
    return ArchiveStatus(
        await retention(client, namespace), await archive.counts(), len(found.closed), len(found.missing), oldest
    )
