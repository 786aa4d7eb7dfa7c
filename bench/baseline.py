"""Temporal's floor for the driver: a bare workflow with as many updates as a household takes, each running
one activity that does nothing. Same servers, same client library, no database, no codec.

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


@activity.defn(name="baseline_noop")
async def noop(n: int) -> int:
    return n


@workflow.defn(name="BaselineWorkflow")
class BaselineWorkflow:
    def __init__(self) -> None:
        self._done = 0

    @workflow.run
    async def run(self, steps: int) -> int:
        await workflow.wait_condition(lambda: self._done >= steps and workflow.all_handlers_finished())
        return self._done

    @workflow.update
    async def step(self, n: int) -> int:
        await workflow.execute_activity(noop, n, start_to_close_timeout=timedelta(seconds=30))
        self._done += 1
        return self._done


async def serve(task_queue: str) -> None:
    settings = get_settings()
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    async with Worker(client, task_queue=task_queue, workflows=[BaselineWorkflow], activities=[noop]):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
