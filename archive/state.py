"""A household's state from its history alone, for a file whose workflow Temporal no longer holds.

While Temporal has the workflow, `status` asks it (the `state` query). Once retention has removed it, the
archived history is replayed against the workflow code, as a worker would, and the state is read off the
replayed workflow: the same code that answered the query answers now, so there is no second copy of how a
stage, a tranche or the money follows from the steps.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from auditor.replay import replayer
from models.state import HouseholdState


class ReplayFailed(Exception):
    """The current code does not reproduce this history: its state cannot be read by replaying it."""


class _Keep(Interceptor):
    """Keeps the workflow object each replayed run creates (the replayer runs outside the sandbox)."""

    def __init__(self) -> None:
        self.instances: dict[str, Any] = {}

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        keep = self.instances

        class Inbound(WorkflowInboundInterceptor):
            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                keep[workflow.info().workflow_id] = workflow.instance()
                return await super().execute_workflow(input)

        return Inbound


async def state_from_history(history: WorkflowHistory, converter: DataConverter) -> HouseholdState:
    """Replay a household's history and return what its `state` query answered at the history's end."""
    keep = _Keep()
    result = await replayer(converter, interceptors=[keep]).replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is not None:
        raise ReplayFailed(f"{history.workflow_id}: {result.replay_failure}")
    instance = keep.instances.get(history.workflow_id)
    if instance is None:
        raise ReplayFailed(f"{history.workflow_id}: the replay started no household workflow")
    return instance.state()
