"""How the engine's workflows run: the sandbox (`sandbox_runner`), and a runner that answers the worker's
serialization-context questions without entering the workflow.

For every payload sequence it encodes or decodes on a workflow's behalf, the SDK asks the workflow instance
which serialization context applies (for the payload codec and external storage). In the sandbox each
answer is an `exec` inside the sandbox with its importer applied; it was 16 % of our worker's main thread
(py-spy, 2026-11-23), plus a converter cloned per activity command. Our codec takes no context and we keep
no payloads in external storage, so the answer cannot change a byte: the runner answers "none" (the worker's
own converter) and "this workflow" at once. `context_free(converter)` is the condition, checked wherever
the runner is built (`workflow_runner`: the worker, the replayer, the auditors' replay).
"""

from __future__ import annotations

from collections.abc import Sequence

import temporalio.workflow
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import (
    DataConverter,
    SerializationContext,
    StorageDriverStoreContext,
    StorageDriverWorkflowInfo,
    WithSerializationContext,
)
from temporalio.worker import UnsandboxedWorkflowRunner, WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions


def context_free(converter: DataConverter) -> bool:
    """True when no serialization or store context can change what the worker's side of `converter` does:
    its codec takes no context and it keeps nothing in external storage."""
    return converter.external_storage is None and not isinstance(converter.payload_codec, WithSerializationContext)


class ContextFreeRunner(WorkflowRunner):
    """Runs workflows with `inner` (the sandbox, or none for the auditors' replay), answering the worker's
    context questions itself. Only for a converter that is `context_free`."""

    def __init__(self, inner: WorkflowRunner) -> None:
        self.inner = inner

    def prepare_workflow(self, defn: temporalio.workflow._Definition) -> None:
        self.inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _ContextFreeInstance(self.inner.create_instance(det), det.info)

    def set_worker_level_failure_exception_types(self, types: Sequence[type[BaseException]]) -> None:
        self.inner.set_worker_level_failure_exception_types(types)


class _ContextFreeInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance, info: temporalio.workflow.Info) -> None:
        self._inner = inner
        self._store = StorageDriverStoreContext(
            target=StorageDriverWorkflowInfo(
                id=info.workflow_id, run_id=info.run_id, type=info.workflow_type, namespace=info.namespace
            )
        )

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        return self._inner.activate(act)

    def get_serialization_context(self, command_info: object) -> SerializationContext | None:
        return None  # the worker's own converter, which is the same for every context

    def get_external_store_context(self, command_info: object) -> StorageDriverStoreContext:
        return self._store

    def get_info(self) -> temporalio.workflow.Info:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()


def sandbox_runner() -> SandboxedWorkflowRunner:
    # Our models and pydantic are deterministic; passing them through avoids re-importing them per run.
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "models",
            "pydantic",
            "pydantic_core",
            "annotated_types",
            "workflows.rules",
            "workflows.search_attributes",
            "workflows.authn",
            "core.errors",
            "core.signing",
            "cryptography",
        )
    )


def workflow_runner(converter: DataConverter, *, sandbox: bool = True) -> WorkflowRunner:
    """The sandbox (or none, for the auditors' replay), answering the worker's per-payload context questions
    itself when `converter` takes no context (ContextFreeRunner above)."""
    inner = sandbox_runner() if sandbox else UnsandboxedWorkflowRunner()
    return ContextFreeRunner(inner) if context_free(converter) else inner
