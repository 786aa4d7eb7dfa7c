"""The Prometheus endpoint a worker serves: the SDK's task metrics and the engine's own counters move as a
household goes through its steps and is paid, read back over HTTP as Prometheus would scrape them."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from core import metrics
from core.client import connect
from runtime.stack import free_port
from tests.conftest import drive_one, enroll, make_households, running_worker
from web.problems import Problem, response


def _value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (the SDK adds its own: namespace, task
    queue, activity type)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


@pytest.fixture(scope="module")
async def scraped(client, sessions, settings):
    """A worker whose client serves metrics; one household taken through every step and paid."""
    port = free_port()
    target = client.service_client.config.target_host
    metered = await connect(settings.model_copy(update={"temporal_address": target}), metrics_port=port)
    assert metrics.runtime(settings.metrics_host, None) is not None
    url = f"http://127.0.0.1:{port}/metrics"
    async with httpx.AsyncClient() as http:
        before = (await http.get(url)).text
        (h,) = make_households(1, beneficiary_group="poor", support_type="new_build", programme="")
        async with running_worker(metered, sessions, settings) as tq:
            await enroll(metered, sessions, tq, [h])
            taken = await drive_one(metered, sessions, h)
            response(Problem("OutOfOrder", "a step out of its turn"))  # what the web app answers a refusal with
            # The read model says closed in the closing step's transaction; the workflow task that completes
            # the run follows it.
            for _ in range(100):
                after = (await http.get(url)).text
                if _value(after, "temporal_workflow_completed_total", task_queue=tq) >= 1:
                    break
                await asyncio.sleep(0.1)
    return before, after, taken, tq, url


async def test_the_engine_counts_the_steps_it_recorded_and_the_payments(scraped) -> None:
    before, after, taken, tq, _ = scraped
    assert _value(before, "housing_steps_recorded_total", task_queue=tq) == 0
    steps = _value(after, "housing_steps_recorded_total", task_queue=tq)
    # drive_one's steps and the engine's own (allocation, the bank's answers) are all recorded, once each.
    assert steps >= taken > 0
    assert _value(after, "housing_steps_recorded_total", task_queue=tq, step="verify") == 1
    assert _value(after, "housing_steps_recorded_total", task_queue=tq, step="accept") == 1
    released = _value(after, "housing_payments_total", task_queue=tq, event="released")
    assert released >= 1
    assert _value(after, "housing_payments_total", task_queue=tq, event="confirmed") == released


async def test_the_sdk_task_metrics_and_the_web_refusals_are_on_the_same_endpoint(scraped) -> None:
    _, after, _, tq, _ = scraped
    assert _value(after, "temporal_workflow_completed_total", task_queue=tq) == 1  # the household closed
    assert _value(after, "temporal_local_activity_execution_latency_count", task_queue=tq) >= 1
    assert _value(after, "temporal_workflow_task_execution_latency_count", task_queue=tq) >= 1
    assert _value(after, "housing_refusals_total", rule="OutOfOrder", where="web") == 1


async def test_the_outbox_backlog_is_a_gauge_of_every_message_waiting_and_the_dead(scraped, scratch, settings) -> None:
    """In a database of its own: three messages, one given up after its last attempt, one failed and retried
    later (not due now, yet waiting), one due. The gauges count two waiting and one dead."""
    from db import outbox
    from notify.dispatcher import Dispatcher

    async with scratch() as s, s.begin():
        for n in range(3):
            message = dict(household_code=None, kind="test", channel="log", recipient="x", subject="s", body="b")
            await outbox.enqueue(s, key=f"metrics-{n}", **message)
        due = await outbox.claim_due(s, 10)
        await outbox.mark_failed(s, due[0], "the channel refused it", max_attempts=1)  # dead
        await outbox.mark_failed(s, due[1], "the channel is down", max_attempts=99)  # later
    dispatcher = Dispatcher(scratch, None, settings)
    await dispatcher._measure_backlog()
    async with scratch() as s, s.begin():  # one more waiting: not counted again within the interval
        await outbox.enqueue(s, key="metrics-3", **message)
    await dispatcher._measure_backlog()
    async with httpx.AsyncClient() as http:
        text = (await http.get(scraped[4])).text
    assert _value(text, "housing_backlog", queue="outbox") == 2
    assert _value(text, "housing_backlog", queue="outbox_dead") == 1
