"""A smoke of the benchmark driver (bench/driver.py) on the suite's servers, so it keeps working: a couple
of dozen households through all their steps, and the bare baseline with as many updates. Figures are not
asserted; what is asserted is that every household closed, paid in full, and every action was timed."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from auditor.history import LOCAL_ACTIVITY_MARKER
from bench.baseline import UPDATES, BaselineWorkflow, noop
from bench.driver import STEPS_PER_HOUSEHOLD, run_baseline, run_ours
from db.schema import households
from models.household import workflow_id_for
from tests.conftest import FRONT_DOOR, make_households, running_worker
from workflows.runner import sandbox_runner

# What a household on the driver's path costs in Temporal calls: 16 activities completed, every one a local
# activity (the 12 that record a step, with the two payments' and the releases' own), 12 updates (the posting of
# the list among them), 2 signals. The baseline takes the same, its activities regular unless started with
# local=True.
OURS_CALLS = {"activities": 16, "local": 16, "updates": 12, "signals": 2}
REGULAR_CALLS = OURS_CALLS | {"local": 0}


async def temporal_calls(client: Client, workflow_id: str) -> dict[str, int]:
    kinds = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activities",
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED: "updates",
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signals",
    }
    counts = dict.fromkeys([*kinds.values(), "local"], 0)
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type in kinds:
            counts[kinds[event.event_type]] += 1
        elif event.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER:
            counts["activities"] += 1
            counts["local"] += 1
    return counts


async def test_the_driver_closes_every_household_and_times_every_action(client, sessions, settings):
    items = make_households(24, programme="")
    async with running_worker(client, sessions, settings) as tq:
        ours = await run_ours(client, sessions, tq, items, officers=8, signer=FRONT_DOOR)
    assert (ours.households, ours.transitions) == (24, 24 * STEPS_PER_HOUSEHOLD)
    assert len(ours.latencies_ms) == 24 * UPDATES and ours.pct(50) <= ours.pct(95) <= ours.pct(99)
    async with sessions() as s:
        closed, paid = (
            await s.execute(
                select(func.count(), func.sum(households.c.paid)).where(
                    households.c.code.in_([h.code for h in items]), households.c.stage == "closed"
                )
            )
        ).one()
    assert closed == 24
    assert await temporal_calls(client, workflow_id_for(items[0].code)) == OURS_CALLS
    assert paid == sum(60_000_000 if h.support_type.value == "new_build" else 30_000_000 for h in items)


async def test_the_baseline_takes_the_same_temporal_calls_through_a_bare_workflow(client):
    tq = f"baseline-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=tq, workflows=[BaselineWorkflow], activities=[noop], workflow_runner=sandbox_runner()
    ):
        base = await run_baseline(client, tq, 24, officers=8, prefix=tq)
        local = await run_baseline(client, tq, 2, officers=2, prefix=f"{tq}-local", local=True)
    assert (base.households, base.transitions, len(base.latencies_ms)) == (24, 24 * STEPS_PER_HOUSEHOLD, 24 * UPDATES)
    assert await temporal_calls(client, f"{tq}-0") == REGULAR_CALLS
    assert local.households == 2 and await temporal_calls(client, f"{tq}-local-0") == OURS_CALLS
