"""Temporal's floor for the driver: a bare workflow that takes exactly the Temporal calls a household takes,
each activity doing nothing. Same servers, same client library; no database, no codec.

Per household (as `HouseholdWorkflow` on the driver's path): 12 updates, 16 activities and 2 signals —
every update records its step (one activity), the two releases also hand the instruction to the channel
(a second activity), and each of the channel's two confirmations is a signal whose handler asks the channel
and records its answer in one activity (since `signed-actions-2026`; before it, two: 18 in all). The
activities are regular ones; started with `local=True`, all 16 are local activities, as ours are since that
patch (the driver's `--baseline-local`).

    python -m bench.baseline TASK_QUEUE      # a worker for it, as its own process (the driver starts it)
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from core.settings import get_settings

# Activities each of the 12 updates runs, in the driver's order: the releases (7th and 11th) run two.
ACTIVITIES_PER_UPDATE = (1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 2, 1)
ACTIVITIES_PER_SIGNAL = 1  # the channel asked and its answer recorded, in one activity
SIGNALS = 2
UPDATES = len(ACTIVITIES_PER_UPDATE)
RELEASES = tuple(k for k, n in enumerate(ACTIVITIES_PER_UPDATE) if n == 2)


@activity.defn(name="baseline_noop")
async def noop(n: int) -> int:
    return n


@workflow.defn(name="BaselineWorkflow")
class BaselineWorkflow:
    @workflow.init
    def __init__(self, local: bool = False) -> None:
        self._updates = 0
        self._signals = 0
        self._local = local

    @workflow.run
    async def run(self, local: bool = False) -> int:
        await workflow.wait_condition(
            lambda: self._updates >= UPDATES and self._signals >= SIGNALS and workflow.all_handlers_finished()
        )
        return self._updates + self._signals

    @workflow.update
    async def step(self, k: int) -> int:
        for i in range(ACTIVITIES_PER_UPDATE[k]):
            await self._noop(i)  # the step's record first, then (releases) the hand-over
        self._updates += 1
        return self._updates

    @workflow.signal
    async def confirm(self) -> None:
        for i in range(ACTIVITIES_PER_SIGNAL):
            await self._noop(i)
        self._signals += 1

    async def _noop(self, i: int) -> int:
        run = workflow.execute_local_activity if self._local else workflow.execute_activity
        return await run(noop, i, start_to_close_timeout=timedelta(seconds=30))

    @workflow.query
    def confirmed(self) -> int:
        return self._signals


async def serve(task_queue: str) -> None:
    settings = get_settings()
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    async with Worker(client, task_queue=task_queue, workflows=[BaselineWorkflow], activities=[noop]):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
