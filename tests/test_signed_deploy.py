"""Signed actions outside the happy path of a fresh household: one in flight across the deploy, and a
signal sent by hand with no input."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.converter import DataConverter
from temporalio.worker import Worker

from core import signing
from db import signing_keys
from db.schema import audit_log
from finance.channel import HttpBank
from models.household import Stage, Step
from operations import sample
from operations.actions import household_state
from operations.csv_list import to_csv
from operations.imports import register, start_workflows
from runtime.worker import make_worker
from tests.conftest import default_bank, enroll, make_households, running_worker, take_step
from workflows.household import SIGNED_PATCH

E = EventType


def _old_worker(client, sessions, settings, tq: str, channel) -> Worker:
    """The engine's worker as the code before the deploy ran: it never takes the signed-actions branch, so
    the household's history answers the patch False for the rest of its run."""
    return make_worker(
        client,
        sessions,
        settings,
        task_queue=tq,
        channel=channel,
        patch_activation_callback=lambda p: p.patch_id != SIGNED_PATCH,
    )


async def test_a_household_in_flight_across_the_deploy_keeps_taking_signed_steps(client, sessions, settings):
    tq = f"deploy-{uuid.uuid4()}"
    bank = default_bank(settings)
    [h] = make_households(1)
    async with sessions() as s:
        signing.trust(await signing_keys.load(s))  # what worker.py installs at start
    async with HttpBank(bank.url, secret=bank.secret) as channel:
        async with _old_worker(client, sessions, settings, tq, channel):
            await enroll(client, sessions, tq, [h])
            await take_step(
                client, sessions, h.code, Step.VERIFY, sample.commune_user(h.district, h.commune), evidence=["BB-TRUOC"]
            )
        # The deploy: a new worker replays the history, whose patch stays off for this run.
        async with make_worker(client, sessions, settings, task_queue=tq, channel=channel):
            done = await take_step(
                client, sessions, h.code, Step.APPROVE, sample.district_user(h.district), evidence=["QD-SAU"]
            )
            assert done.to_stage is Stage.FUND_ALLOCATION
            assert (await household_state(client, h.code)).stage is Stage.FUND_ALLOCATION
    async with sessions() as s:
        rows = (
            await s.execute(
                select(audit_log.c.step, audit_log.c.assertion)
                .where(audit_log.c.household_code == h.code)
                .order_by(audit_log.c.seq)
            )
        ).all()
    # Both recorded with their signed assertions, before the deploy and after it.
    assert [r.step for r in rows] == ["verify", "post_list", "approve"] and all(r.assertion for r in rows)


async def test_a_signal_with_no_input_or_two_is_ignored_and_the_household_goes_on(client, sessions, settings):
    async with running_worker(client, sessions, settings) as tq:
        [h] = await enroll(client, sessions, tq, make_households(1))
        handle = client.get_workflow_handle(h.workflow_id)
        await handle.signal("payment_result")  # no payload at all: nothing for the codec to refuse
        await handle.signal("payment_result", args=[{"payment_id": "X"}, {"payment_id": "Y"}])
        done = await asyncio.wait_for(
            take_step(
                client, sessions, h.code, Step.VERIFY, sample.commune_user(h.district, h.commune), evidence=["BB-1"]
            ),
            20,
        )
        assert done.to_stage is Stage.APPROVAL
        events = [e.event_type async for e in handle.fetch_history_events()]
        assert E.EVENT_TYPE_WORKFLOW_TASK_FAILED not in events
        assert events.count(E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) == 2


async def test_a_workflow_id_taken_first_by_someone_else_does_not_keep_the_household_out(client, sessions, settings):
    """Someone who reaches Temporal, holding no key, starts `household-<code>` before the import (plain input:
    refused, the run fails). The import sees an ended run that is not the engine's (no step in the register)
    and starts the household's own; a second import then starts nothing."""
    [h] = make_households(1)
    async with running_worker(client, sessions, settings) as tq:
        keyless = Client(client.service_client, namespace=client.namespace, data_converter=DataConverter.default)
        squat = await keyless.start_workflow("HouseholdWorkflow", {"nothing": True}, id=h.workflow_id, task_queue=tq)
        with pytest.raises(WorkflowFailureError):
            await squat.result()
        report, registered, current = await register(sessions, to_csv([h]), "squat.csv", sample.PROVINCE_USER)
        assert await start_workflows(
            client, tq, registered, current, importers=report.importers, sessions=sessions
        ) == (1, 0)
        assert (await client.get_workflow_handle(h.workflow_id).describe()).status is WorkflowExecutionStatus.RUNNING
        done = await take_step(
            client, sessions, h.code, Step.VERIFY, sample.commune_user(h.district, h.commune), evidence=["BB"]
        )
        assert done.to_stage is Stage.APPROVAL
        assert await start_workflows(
            client, tq, registered, current, importers=report.importers, sessions=sessions
        ) == (0, 1)
