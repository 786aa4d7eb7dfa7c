"""Someone who reaches the Temporal frontend with the `temporal` CLI, but holds no payload key, cannot act on a
household: an update whose input is plain JSON (even a correctly signed one) is rejected by the engine's codec
and payload converter as `Unauthenticated`, with no event in the household's history and no failed workflow
task, and the household goes on taking real steps. Failure messages are sealed, except the `Unauthenticated`
refusal, which the raw CLI can read."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from auditor.history import read_trail
from core import signing
from core.converter import DATA_CONVERTER
from core.errors import Refusal
from db import users
from models import VerifyInput
from models.household import Step
from operations import sample
from operations.actions import household_state
from runtime.stack import binary
from tests.conftest import FINDINGS, FRONT_DOOR, SEALED, enroll, make_households, running_worker, take_step, wait_until

E = EventType


async def temporal_cli(client, *args: str) -> subprocess.CompletedProcess:
    """The raw `temporal` CLI against the suite's dev server: no codec, no key. In a thread: the worker runs
    on this event loop and must answer while the CLI waits."""
    cmd = [
        str(binary("temporal")),
        *args,
        "--address",
        client.service_client.config.target_host,
        "--namespace",
        client.namespace,
    ]
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60)


async def update_by_hand(client, workflow_id: str, name: str, arg: dict) -> subprocess.CompletedProcess:
    return await temporal_cli(
        client,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        workflow_id,
        "--name",
        name,
        "--input",
        json.dumps(arg, ensure_ascii=False),
    )


async def events(client, workflow_id: str) -> list:
    return list((await client.get_workflow_handle(workflow_id).fetch_history()).events)


async def settled(client, workflow_id: str) -> list:
    """The history once the worker has answered its last workflow task (nothing left for it to write)."""
    pending = (E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, E.EVENT_TYPE_WORKFLOW_TASK_STARTED)

    async def quiet():
        found = await events(client, workflow_id)
        return found if found[-1].event_type not in pending else None

    return await wait_until(quiet)


def failed_tasks(history_events) -> int:
    return sum(e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history_events)


@pytest.fixture(scope="module")
async def worker(client, sessions, settings):
    """A worker for the module, on a task queue of its own (yielded)."""
    async with running_worker(client, sessions, settings) as tq:
        yield tq


@pytest.fixture
async def household(client, sessions, worker):
    """A household of the test's own, waiting for verification, and the worker's task queue: a test that moves
    its household on (or might, were a refusal to fail) leaves the other tests' households where they were."""
    [h] = await enroll(client, sessions, worker, make_households(1))
    return h, worker


async def commune_actor(sessions, h):
    async with sessions() as session:
        return await users.require_actor(session, sample.commune_user(h.district, h.commune))


async def refused_by_hand(client, h, arg: dict) -> str:
    """Send `arg` as a plain `verify` update with the raw CLI; it must be refused leaving the history as it
    was. Returns what the CLI printed."""
    before = await settled(client, h.workflow_id)
    done = await update_by_hand(client, h.workflow_id, "verify", arg)
    printed = done.stdout + done.stderr
    assert done.returncode != 0, printed
    assert "Unauthenticated" in printed and "not sealed by a payload key this engine holds" in printed, printed
    await asyncio.sleep(0.3)  # time for anything the worker might still write
    after = await settled(client, h.workflow_id)
    assert [e.event_id for e in after] == [e.event_id for e in before], "the refused update left events behind"
    assert failed_tasks(after) == 0
    return printed


async def test_a_forged_update_from_the_raw_cli_is_refused_without_a_trace(client, sessions, household):
    h, _ = household
    actor = await commune_actor(sessions, h)
    await refused_by_hand(client, h, {"actor": actor.model_dump(mode="json"), "evidence": ["FORGED"]})
    assert (await household_state(client, h.code)).stage.value == "verification"


async def test_a_signed_input_sent_unsealed_is_refused_the_same_way(client, sessions, household):
    """A correctly signed input (as a front door would sign it) copied out and sent in plain JSON: the codec
    refuses it before any validator runs, so the signature alone does not let it in."""
    h, _ = household
    actor = await commune_actor(sessions, h)
    inp = signing.sign_input(
        FRONT_DOOR,
        VerifyInput(actor=actor, evidence=["BB-COPIED"], findings=FINDINGS),
        workflow_id=h.workflow_id,
        step=Step.VERIFY.value,
        user_id=actor.user_id,
    )
    await refused_by_hand(client, h, inp.model_dump(mode="json"))
    assert (await household_state(client, h.code)).stage.value == "verification"


async def test_a_plain_signal_is_dropped_and_the_household_still_takes_a_real_step(client, sessions, household):
    h, _ = household
    done = await temporal_cli(
        client,
        "workflow",
        "signal",
        "--workflow-id",
        h.workflow_id,
        "--name",
        "payment_result",
        "--input",
        json.dumps({"payment_id": f"{h.code}-A1-T1-1", "state": "confirmed"}),
    )
    assert done.returncode == 0, done.stderr  # a signal is always written; the engine drops what it cannot read
    assert failed_tasks(await settled(client, h.workflow_id)) == 0
    # The household is not wedged: a real, signed and sealed step goes through.
    before = len(await events(client, h.workflow_id))
    await take_step(
        client, sessions, h.code, Step.VERIFY, sample.commune_user(h.district, h.commune), evidence=["BB-1"]
    )
    state = await household_state(client, h.code)
    assert state.stage.value == "approval"
    assert len(await events(client, h.workflow_id)) > before


async def test_refusal_messages_are_sealed_in_temporal_and_opened_by_the_client_and_the_auditor(
    client, sessions, settings
):
    """A business refusal names people, codes and amounts: in Temporal its message is sealed (the raw CLI shows
    'Encoded failure'); the client and the auditors' reader open it. (The `Unauthenticated` refusal stays
    readable: the raw CLI read it in the tests above, holding no key.)"""
    [h] = make_households(1, district="Cao Lộc", commune=sample.UNITS["Cao Lộc"][0], programme="")
    async with running_worker(client, sessions, settings) as tq:
        await enroll(client, sessions, tq, [h])
        await take_step(
            client, sessions, h.code, Step.VERIFY, sample.commune_user(h.district, h.commune), evidence=["BB-1"]
        )
        await take_step(
            client, sessions, h.code, Step.APPROVE, sample.district_user(h.district), evidence=[h.decision_ref]
        )
        # Refused by the recording activity, after the update was accepted: the refusal is in the history.
        with pytest.raises(Refusal, match="SourceNotEligible") as refused:
            await take_step(client, sessions, h.code, Step.ALLOCATE, "tc.hoang", evidence=["QD"], source="ADV-LOCBINH")
    assert h.code in refused.value.message  # the client opened the sealed message
    history = await client.get_workflow_handle(h.workflow_id).fetch_history()
    shown = await temporal_cli(client, "workflow", "show", "--workflow-id", h.workflow_id, "--output", "json")
    assert shown.returncode == 0, shown.stderr
    for raw in (history.to_json(), shown.stdout):
        messages = _failure_messages(raw)
        assert "Encoded failure" in messages and h.code not in messages and "ADV-LOCBINH" not in messages
    trail = await read_trail(history, SEALED)
    [refusal] = [e for e in trail.events if e.kind == "refused"]
    assert refusal.data["rule"] == "SourceNotEligible" and h.code in refusal.data["message"]
    [step] = [t for t in trail.transitions if t.refusal]
    assert step.refusal.startswith("SourceNotEligible: ") and h.code in step.refusal
    # Without the key the reader says the message is sealed, and under which key.
    blind = await read_trail(history, DATA_CONVERTER)
    [refusal] = [e for e in blind.events if e.kind == "refused"]
    assert refusal.data["message"] == "[encrypted, key test-2026a]" and not blind.opened


def _failure_messages(history_json: str) -> str:
    """Every failure message in a history (JSON), as the raw CLI shows them."""
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            level = node.get("failure")
            while isinstance(level, dict):
                found.append(level.get("message", ""))
                level = level.get("cause")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(history_json))
    return "\n".join(found)


async def test_a_household_workflow_started_by_hand_in_plain_json_runs_nothing(client, worker):
    """Starting a household's workflow with the raw CLI: its input is refused as it is read, so the workflow
    fails at once, before any activity (it could record nothing), and its failure is readable."""
    tq = worker
    workflow_id = f"household-FORGED-{uuid.uuid4().hex[:6].upper()}"
    done = await temporal_cli(
        client,
        "workflow",
        "start",
        "--type",
        "HouseholdWorkflow",
        "--task-queue",
        tq,
        "--workflow-id",
        workflow_id,
        "--input",
        json.dumps({"household": {"code": "X"}}),
    )
    assert done.returncode == 0, done.stderr  # the server takes any start; the engine reads nothing unsealed
    with pytest.raises(WorkflowFailureError) as failed:
        await client.get_workflow_handle(workflow_id).result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "Unauthenticated"
    history = await events(client, workflow_id)
    kinds = {e.event_type for e in history}
    assert E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED in kinds
    assert not kinds & {E.EVENT_TYPE_MARKER_RECORDED, E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}
    failure = next(e for e in history if e.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED)
    assert "not sealed by a payload key" in failure.workflow_execution_failed_event_attributes.failure.message
