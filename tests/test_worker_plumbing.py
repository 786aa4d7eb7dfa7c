"""What the worker adds to the SDK's plumbing: the runner that answers serialization-context questions itself
(workflows/runner.py), used only where no context can change a payload, and one payload converter for the process
(core/converter.py)."""

from __future__ import annotations

import dataclasses

from temporalio.converter import PayloadCodec, WithSerializationContext
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from core.converter import DATA_CONVERTER, SharedPydanticPayloadConverter
from models import Actor, Jurisdiction, VerifyInput
from tests.conftest import SEALED
from workflows.runner import ContextFreeRunner, context_free, workflow_runner


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


async def test_every_data_converter_shares_one_payload_converter_and_models_round_trip():
    # The SDK makes a data converter per activation; each must not start a pydantic type cache of its own.
    a, b = dataclasses.replace(DATA_CONVERTER), dataclasses.replace(SEALED)
    assert SharedPydanticPayloadConverter() is SharedPydanticPayloadConverter()
    inp = VerifyInput(
        actor=Actor(
            user_id="u",
            role="commune_officer",
            agency="UBND",
            jurisdiction=Jurisdiction(province="Lạng Sơn", district="Cao Lộc"),
        ),
        evidence=["BB"],
    )
    [sealed] = await b.encode([inp])
    assert sealed.metadata["encoding"] != b"json/plain"
    assert await a.decode(await a.encode([inp]), [VerifyInput]) == [inp]
    assert await SEALED.decode([sealed], [VerifyInput]) == [inp]
