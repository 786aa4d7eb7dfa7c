"""The engine's metrics, exported for Prometheus by the Temporal runtime beside the SDK's own.

The SDK already measures workflow and activity tasks (latency, failures, schedule-to-start, the pollers); the
engine adds what an operator is paged for: steps recorded, refusals by rule, payments released, confirmed and
escalated, and the two backlogs (notifications waiting in the outbox, closed histories not yet archived).
One process, one runtime: `runtime(port)` makes it the first time with the Prometheus endpoint on that port.
Inside an activity the activity's meter is used (it carries the task queue and activity type); elsewhere the
process runtime's. With no endpoint configured every call here costs nothing and records nothing.

Names (counters end in `_total`): housing_steps_recorded_total{step}, housing_refusals_total{rule, where},
housing_payments_total{event}, housing_backlog{queue} (outbox, outbox_dead, archive).
"""

from __future__ import annotations

from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

_runtime: Runtime | None = None


def runtime(host: str, port: int | None) -> Runtime | None:
    """The process's Temporal runtime with its Prometheus endpoint, made once; None when no port is set."""
    global _runtime
    if port is None:
        return _runtime
    if _runtime is None:
        telemetry = TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{host}:{port}", counters_total_suffix=True, durations_as_seconds=True
            )
        )
        _runtime = Runtime(telemetry=telemetry)
    return _runtime


def enabled() -> bool:
    """Whether this process serves metrics: what is measured only for them (a query) is skipped otherwise."""
    return _runtime is not None


def _meter() -> MetricMeter:
    if activity.in_activity():
        return activity.metric_meter()
    return _runtime.metric_meter if _runtime is not None else MetricMeter.noop


def _instrument(kind: str, name: str, description: str):
    # Made from the meter at hand each time: an activity's meter is its own (it carries that activity's
    # labels), so an instrument kept from another meter would count under another activity's name.
    meter = _meter()
    return (meter.create_counter if kind == "counter" else meter.create_gauge)(name, description)


def step_recorded(step: str) -> None:
    _instrument("counter", "housing_steps_recorded", "Steps committed to the audit log, by step").add(1, {"step": step})


def refused(rule: str, where: str) -> None:
    """A refusal named by its rule. `where="engine"`: decided in the recording transaction (the worker);
    `where="web"`: what the web app answered, the engine's refusals it passes back included. Alert on one."""
    _instrument("counter", "housing_refusals", "Actions refused, by rule").add(1, {"rule": rule, "where": where})


def payment(event: str) -> None:
    """released (handed to the channel), confirmed or failed (the bank's signed answer recorded), escalated
    (late: counted once per escalation, not per retry of its activity)."""
    _instrument("counter", "housing_payments", "Payments, by event").add(1, {"event": event})


def backlog(queue: str, size: int) -> None:
    """outbox: notifications waiting to be sent (due or retrying later); outbox_dead: given up after the last
    attempt; archive: closed histories Temporal holds, not yet archived."""
    _instrument("gauge", "housing_backlog", "Work waiting, by queue").set(max(size, 0), {"queue": queue})
