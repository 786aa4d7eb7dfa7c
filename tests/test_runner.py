"""The runner that answers the worker's serialization-context questions itself (core/runner.py) is used only
where no context can change a payload."""

from __future__ import annotations

import dataclasses

from temporalio.converter import PayloadCodec, WithSerializationContext
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from core.runner import ContextFreeRunner, context_free
from core.temporal import DATA_CONVERTER, workflow_runner
from tests.conftest import SEALED


class _PerWorkflowKeys(PayloadCodec, WithSerializationContext):
    """A codec that would pick its key by workflow: the context matters to it."""

    def with_context(self, context):
        return self

    async def encode(self, payloads):
        return list(payloads)

    async def decode(self, payloads):
        return list(payloads)


def test_our_converters_take_no_context_so_the_runner_answers_for_the_workflow():
    for converter in (SEALED, DATA_CONVERTER):
        assert context_free(converter)
        runner = workflow_runner(converter)
        assert isinstance(runner, ContextFreeRunner) and isinstance(runner.inner, SandboxedWorkflowRunner)
    assert isinstance(workflow_runner(SEALED, sandbox=False).inner, UnsandboxedWorkflowRunner)


def test_a_codec_that_takes_context_gets_the_plain_runner():
    converter = dataclasses.replace(DATA_CONVERTER, payload_codec=_PerWorkflowKeys())
    assert not context_free(converter)
    assert isinstance(workflow_runner(converter), SandboxedWorkflowRunner)
    assert isinstance(workflow_runner(converter, sandbox=False), UnsandboxedWorkflowRunner)
