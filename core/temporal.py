"""Temporal client and worker construction, shared by worker.py, starter.py and the tests."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.household import HouseholdActivities
from core.settings import Settings
from db.engine import Sessions
from workflows.household import HouseholdWorkflow

DATA_CONVERTER = pydantic_data_converter


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace, data_converter=DATA_CONVERTER
    )


def sandbox_runner() -> SandboxedWorkflowRunner:
    # Our models and pydantic are deterministic; passing them through avoids re-importing them per run.
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "models", "pydantic", "pydantic_core", "annotated_types"
        )
    )


def make_worker(client: Client, sessions: Sessions, settings: Settings, *, task_queue: str | None = None) -> Worker:
    activities = HouseholdActivities(sessions, settings)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal_task_queue,
        workflows=[HouseholdWorkflow],
        activities=[activities.record_transition, activities.send_reminder],
        workflow_runner=sandbox_runner(),
    )
