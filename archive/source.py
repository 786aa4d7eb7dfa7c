"""Where a reader gets a workflow's history: from Temporal while it holds it, from the archive after.

Every reader goes through `Histories`: `status` and the web pages (via operations/actions.household_state),
`audit timeline`, `replay`, `verify` and `export`. A workflow in neither is reported by name (`missing`),
so a household whose history was lost is never taken for one that was never imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from archive.store import HistoryArchive, PostgresArchive
from archive.witness import read_public_keys
from core.settings import Settings
from db.engine import Sessions

Where = Literal["temporal", "archive"]
# The visibility queries naming the workflows the auditors read (payout batches hold no household's money
# themselves, but their histories are the batches' trail).
HOUSEHOLDS = "WorkflowType = 'HouseholdWorkflow'"
ALL_WORKFLOWS = "WorkflowType = 'HouseholdWorkflow' OR WorkflowType = 'PayoutBatchWorkflow'"


def open_archive(sessions: Sessions, settings: Settings) -> PostgresArchive:
    """The archive as the readers open it: trusting only rows the witness signed, with its public key from
    the file (WITNESS_PUBLIC_KEY_FILE, else the published one), never from the database. Without that file,
    rows are read only while none is signed (an engine run without a witness); once the witness signs,
    reading without its key is refused (`ArchiveUntrusted`)."""
    path = settings.witness_public_key_path
    return PostgresArchive(sessions, trusted=read_public_keys(path) if path.exists() else None, strict=True)


@dataclass(frozen=True)
class Found:
    history: WorkflowHistory
    where: Where


@dataclass
class Histories:
    client: Client | None
    archive: HistoryArchive | None
    missing: list[str] = field(default_factory=list)  # ids asked for and found in neither
    from_archive: int = 0  # how many histories came from the archive

    async def get(self, workflow_id: str) -> Found | None:
        """The workflow's latest run: Temporal's, else the archive's; None when neither has it."""
        if self.client is not None:
            try:
                return Found(await self.client.get_workflow_handle(workflow_id).fetch_history(), "temporal")
            except RPCError as e:
                if e.status != RPCStatusCode.NOT_FOUND:
                    raise
        if self.archive is not None and (kept := await self.archive.get(workflow_id)) is not None:
            self.from_archive += 1
            return Found(kept.workflow_history(), "archive")
        return None

    async def ids(self, query: str) -> list[str]:
        """Every workflow the query names that Temporal holds, and every archived one of those types."""
        found: set[str] = set()
        if self.client is not None:
            found |= {wf.id async for wf in self.client.list_workflows(query)}
        if self.archive is not None:
            found |= set(await self.archive.workflow_ids(households_only=query == HOUSEHOLDS))
        return sorted(found)

    async def each(
        self, ids: Iterable[str], *, concurrency: int = 16, on_done: Callable[[], None] | None = None
    ) -> AsyncIterator[WorkflowHistory]:
        """Each workflow's history in the order of `ids`, a few fetched at a time; those in neither place are
        skipped and named in `missing`."""
        ids = list(ids)
        gate = asyncio.Semaphore(concurrency)

        async def one(wid: str) -> Found | None:
            async with gate:
                found = await self.get(wid)
            if on_done:
                on_done()
            return found

        for start in range(0, len(ids), concurrency * 4):
            part = ids[start : start + concurrency * 4]
            for wid, found in zip(part, await asyncio.gather(*(one(w) for w in part)), strict=True):
                if found is None:
                    self.missing.append(wid)
                else:
                    yield found.history
