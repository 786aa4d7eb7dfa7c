"""Temporal client and worker construction, shared by worker.py, starter.py and the tests."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.household import HouseholdActivities
from core.settings import Settings
from db.engine import Sessions
from workflows.household import HouseholdWorkflow
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

DATA_CONVERTER = pydantic_data_converter


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """A client; with lazy=True it reaches the server only on its first call."""
    return await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace, data_converter=DATA_CONVERTER, lazy=lazy
    )


async def ensure_search_attributes(client: Client, namespace: str = "default") -> list[str]:
    """Register the household search attributes where missing (the dev server gets them at start;
    an external cluster or the time-skipping test server through the operator service). Returns those added."""
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError:
        known = set()
    missing = [key.name for key in SEARCH_ATTRIBUTES if key.name not in known]
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing},
            )
        )
    return missing


def sandbox_runner() -> SandboxedWorkflowRunner:
    # Our models and pydantic are deterministic; passing them through avoids re-importing them per run.
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "models", "pydantic", "pydantic_core", "annotated_types"
        )
    )


def make_worker(client: Client, sessions: Sessions, settings: Settings, *, task_queue: str | None = None) -> Worker:
    activities = HouseholdActivities(sessions)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal_task_queue,
        workflows=[HouseholdWorkflow],
        activities=[activities.record_transition, activities.send_reminder],
        workflow_runner=sandbox_runner(),
    )
