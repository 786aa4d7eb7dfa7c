"""Read a household's Temporal event history as an auditor does: from the history alone.

`read_trail` walks the events in order and returns what they say: the household the workflow was started
for, every step that was recorded (the `record_transition` activity's input is the engine's whole
`TransitionRecord`: who, in which role and agency, with which evidence and reason, from which stage to
which; its result, the `TransitionOutcome`, is the audit hash and the money the ledger moved; since the
step is written by a local activity, whose marker event keeps only the result, the result carries the
record), every
step the engine refused, policy changes, payment instructions and the channel's answers, reminders and
escalations. Payloads are opened with the converter given (its codec taking plain payloads too: histories
written before encryption was switched on); with no key (or not the key that sealed them) they stay sealed and
the trail says so instead of guessing. Failure messages are sealed like payloads (core/converter.py: in the
failure's encoded attributes): the reader opens them the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter

from core.codec import PayloadKeyError, for_reading, is_sealed, sealed_key_ids
from models.records import TransitionOutcome, TransitionRecord

E = EventType
LOCAL_ACTIVITY_MARKER = "core_local_activity"  # the SDK core's marker for a local activity's result


@dataclass(frozen=True)
class Sealed:
    """A payload the reader could not open: encrypted under these key ids."""

    key_ids: tuple[str, ...]

    def __str__(self) -> str:
        return f"[encrypted, key {', '.join(self.key_ids)}]"


@dataclass
class Transition:
    """One step as its history holds it: the record the engine was asked to write (the `record_transition`
    activity's input) and, once it is written, what the engine answered (the activity's result)."""

    record: TransitionRecord
    policy_version: str | None  # the policy the workflow ran under when it took the step
    event_id: int
    outcome: TransitionOutcome | None = None  # None while the activity runs, or when it was refused
    refusal: str | None = None  # the engine's business refusal, when the activity failed

    @property
    def recorded(self) -> bool:
        return self.outcome is not None

    @property
    def amount(self) -> int | None:
        return self.outcome.amount if self.outcome else None


@dataclass(frozen=True)
class Event:
    """One line of the timeline: what happened, when, and its particulars."""

    at: datetime
    kind: str
    data: dict[str, Any]
    event_id: int


@dataclass
class Trail:
    workflow_id: str
    run_id: str
    workflow_type: str
    status: str = "running"
    household: dict[str, Any] | Sealed | None = None
    policy: dict[str, Any] | Sealed | None = None
    transitions: list[Transition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    sealed_keys: set[str] = field(default_factory=set)
    opened: bool = True  # False when some payload stayed sealed (no key)

    @property
    def household_code(self) -> str:
        if isinstance(self.household, dict) and self.household.get("code"):
            return self.household["code"]
        if self.transitions:
            return self.transitions[0].record.household_code
        prefix = "household-"
        return self.workflow_id[len(prefix) :] if self.workflow_id.startswith(prefix) else self.workflow_id


def _at(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


class _Reader:
    def __init__(self, converter: DataConverter, trail: Trail) -> None:
        self._converter = for_reading(converter)
        self._trail = trail

    async def values(self, payloads: Sequence[Payload]) -> list[Any]:
        if not payloads:
            return []
        if any(is_sealed(p) for p in payloads):
            keys = sealed_key_ids(payloads)
            self._trail.sealed_keys |= keys
            if self._converter.payload_codec is None:
                self._trail.opened = False
                return [Sealed(tuple(sorted(keys)))] * len(payloads)
            try:
                return await self._converter.decode(payloads)
            except PayloadKeyError:
                # A key the reader does not hold (or an altered payload): say so, do not stop the audit.
                self._trail.opened = False
                return [Sealed(tuple(sorted(keys)))] * len(payloads)
        return await self._converter.decode(payloads)

    async def value(self, payloads: Sequence[Payload]) -> Any:
        found = await self.values(payloads)
        return found[0] if found else None

    async def failure(self, failure: Failure) -> Failure:
        """A copy of `failure` with its payloads opened and every level's message taken out of its encoded
        attributes; without the key, each sealed message reads as the key ids it is sealed under."""
        opened = Failure()
        opened.CopyFrom(failure)
        keys = sealed_key_ids(p for level in _chain(opened) for p in _failure_payloads(level))
        if keys:
            self._trail.sealed_keys |= keys
            try:
                if self._converter.payload_codec is None:
                    raise PayloadKeyError("no key")
                await self._converter.payload_codec.decode_failure(opened)
            except PayloadKeyError:
                self._trail.opened = False
                opened.CopyFrom(failure)
        for level in _chain(opened):
            if not level.HasField("encoded_attributes"):
                continue
            if is_sealed(level.encoded_attributes):
                level.message = str(Sealed(tuple(sorted(sealed_key_ids([level.encoded_attributes])))))
                continue
            try:
                [attributes] = self._converter.payload_converter.from_payloads([level.encoded_attributes])
            except (KeyError, RuntimeError, ValueError):
                continue  # not what a failure converter writes: the message stays as the history has it
            if isinstance(attributes, dict) and isinstance(attributes.get("message"), str):
                level.message = attributes["message"]
        return opened


def _chain(failure: Failure) -> list[Failure]:
    levels = [failure]
    while levels[-1].HasField("cause"):
        levels.append(levels[-1].cause)
    return levels


def _failure_payloads(failure: Failure) -> list[Payload]:
    found = [failure.encoded_attributes] if failure.HasField("encoded_attributes") else []
    return found + list(failure.application_failure_info.details.payloads)


async def read_trail(history: WorkflowHistory, converter: DataConverter) -> Trail:
    """Everything the history says about its workflow, in event order."""
    first = history.events[0] if history.events else None
    started = first.workflow_execution_started_event_attributes if first else None
    trail = Trail(
        workflow_id=history.workflow_id,
        run_id=started.original_execution_run_id if started else "",
        workflow_type=started.workflow_type.name if started else "",
    )
    read = _Reader(converter, trail)
    scheduled: dict[int, tuple[str, Any]] = {}  # activity scheduled event id → (type, input)
    updates: dict[str, tuple[str, Any]] = {}  # update id → (name, argument)
    pending: dict[int, Transition] = {}
    policy_version: str | None = None

    for ev in history.events:
        at, eid, t = _at(ev), ev.event_id, ev.event_type
        if t == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            inp = await read.value(ev.workflow_execution_started_event_attributes.input.payloads)
            if isinstance(inp, dict) and "household" in inp:
                trail.household, trail.policy = inp["household"], inp.get("policy")
                policy_version = (trail.policy or {}).get("version")
            elif isinstance(inp, Sealed):
                trail.household = trail.policy = inp
            trail.events.append(
                Event(
                    at,
                    "opened",
                    {"household": trail.household, "policy": policy_version, "input": None if trail.household else inp},
                    eid,
                )
            )
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            a = ev.workflow_execution_update_accepted_event_attributes
            name = a.accepted_request.input.name
            arg = await read.value(a.accepted_request.input.args.payloads)
            updates[a.accepted_request.meta.update_id] = (name, arg)
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            a = ev.workflow_execution_update_completed_event_attributes
            name, arg = updates.get(a.meta.update_id, ("?", None))
            if a.outcome.HasField("failure"):
                f = await read.failure(a.outcome.failure)
                kind = f.application_failure_info.type or f.cause.application_failure_info.type or "Failure"
                message = f.cause.message if f.HasField("cause") and f.cause.message else f.message
                trail.events.append(
                    Event(
                        at, "refused", {"update": name, "rule": kind, "message": message, "actor": _actor_of(arg)}, eid
                    )
                )
            elif name == "set_policy" and isinstance(arg, dict):
                policy_version = (arg.get("policy") or {}).get("version")
                trail.policy = arg.get("policy")
                trail.events.append(Event(at, "policy", {"version": policy_version, "actor": _actor_of(arg)}, eid))
            elif name == "move" and isinstance(arg, dict):  # the moved household runs under the new unit's policy
                policy_version = arg.get("policy_version") or policy_version
                trail.events.append(Event(at, "policy", {"version": policy_version, "actor": _actor_of(arg)}, eid))
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            a = ev.activity_task_scheduled_event_attributes
            inp = await read.value(a.input.payloads)
            scheduled[eid] = (a.activity_type.name, inp)
            if a.activity_type.name == "record_transition" and isinstance(inp, dict):
                pending[eid] = Transition(TransitionRecord.model_validate(inp), policy_version, eid)
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            a = ev.activity_task_completed_event_attributes
            kind, inp = scheduled.get(a.scheduled_event_id, ("?", None))
            result = await read.value(a.result.payloads)
            if kind == "record_transition" and a.scheduled_event_id in pending:
                tr = pending.pop(a.scheduled_event_id)
                if isinstance(result, dict):
                    tr.outcome = TransitionOutcome.model_validate(result)
                trail.transitions.append(tr)
                trail.events.append(Event(tr.record.at, "step", {"transition": tr}, eid))
            elif kind in ("submit_payment", "check_payment", "escalate_payment", "send_reminder"):
                trail.events.append(Event(at, kind, {"input": inp, "result": result}, eid))
        elif t in (E.EVENT_TYPE_ACTIVITY_TASK_FAILED, E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT):
            a = (
                ev.activity_task_failed_event_attributes
                if t == E.EVENT_TYPE_ACTIVITY_TASK_FAILED
                else ev.activity_task_timed_out_event_attributes
            )
            kind, _ = scheduled.get(a.scheduled_event_id, ("?", None))
            if kind == "record_transition" and a.scheduled_event_id in pending:
                tr = pending.pop(a.scheduled_event_id)
                tr.refusal = _refusal(_engine_failure(await read.failure(a.failure)))
                trail.transitions.append(tr)  # the update's failure, next, is the timeline's line for it
        elif t == E.EVENT_TYPE_MARKER_RECORDED:
            sent = await _local_instruction(read, ev.marker_recorded_event_attributes)
            if sent is not None:  # the local submit_payment's answer is the instruction it built and sent
                trail.events.append(Event(at, "submit_payment", {"input": sent, "result": True}, eid))
            tr = await _local_transition(read, ev.marker_recorded_event_attributes, policy_version, eid)
            if tr is not None:
                trail.transitions.append(tr)
                if tr.recorded:
                    trail.events.append(Event(tr.record.at, "step", {"transition": tr}, eid))
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            a = ev.workflow_execution_signaled_event_attributes
            trail.events.append(
                Event(at, "signal", {"name": a.signal_name, "input": await read.value(a.input.payloads)}, eid)
            )
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            trail.status = "completed"
            result = await read.value(ev.workflow_execution_completed_event_attributes.result.payloads)
            trail.events.append(Event(at, "closed", {"result": result}, eid))
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            trail.status = "terminated"
            trail.events.append(
                Event(at, "terminated", {"reason": ev.workflow_execution_terminated_event_attributes.reason}, eid)
            )
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            trail.status = "failed"
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            trail.status = "continued"
    # A transition whose activity is still running is in the history but not (yet) recorded.
    trail.transitions.extend(pending.values())
    return trail


async def _local_transition(read: _Reader, marker: Any, policy_version: str | None, eid: int) -> Transition | None:
    """A step written by the local activity (patch `record-step-locally-2026`): its marker holds the answer
    only, which carries the record — the outcome as `record`, a refusal as the failure's details."""
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details:
        return None
    data = json.loads(marker.details["data"].payloads[0].data or b"{}")
    kind = data.get("activity_type")
    if kind not in ("record_transition", "settle_answer"):  # settle_answer: the channel's answer, asked and recorded
        return None
    if marker.HasField("failure"):
        f = _engine_failure(await read.failure(marker.failure))
        record = await read.value(f.application_failure_info.details.payloads)
        if not isinstance(record, dict):
            return None  # sealed without the key: the update's refusal, next, still says who and why
        return Transition(TransitionRecord.model_validate(record), policy_version, eid, refusal=_refusal(f))
    result = await read.value(marker.details["result"].payloads) if "result" in marker.details else None
    if kind == "settle_answer" and isinstance(result, dict):
        result = result.get("outcome")  # None: the answer was not final, nothing recorded
    if not isinstance(result, dict) or not result.get("record"):
        return None
    outcome = TransitionOutcome.model_validate(result)
    assert outcome.record is not None
    return Transition(outcome.record, policy_version, eid, outcome=outcome)


async def _local_instruction(read: _Reader, marker: Any) -> dict | None:
    """The instruction a local submit_payment (patch `signed-actions-2026`) built from PostgreSQL and sent."""
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details or marker.HasField("failure"):
        return None
    if json.loads(marker.details["data"].payloads[0].data or b"{}").get("activity_type") != "submit_payment":
        return None
    result = await read.value(marker.details["result"].payloads) if "result" in marker.details else None
    return result if isinstance(result, dict) else None


def _engine_failure(failure: Any) -> Any:
    """The failure the activity raised: the first in the chain that names its rule (the activity's wrapper,
    when there is one, names none)."""
    while failure.HasField("cause") and not failure.application_failure_info.type:
        failure = failure.cause
    return failure


def _refusal(failure: Any) -> str:
    return f"{failure.application_failure_info.type or 'Failure'}: {failure.message}"


def _actor_of(arg: Any) -> dict[str, Any] | None:
    return arg.get("actor") if isinstance(arg, dict) else None


async def read_trails(
    histories: AsyncIterator[WorkflowHistory], converter: DataConverter, *, on_done: Callable[[], None] | None = None
) -> list[Trail]:
    trails = []
    async for history in histories:
        trails.append(await read_trail(history, converter))
        if on_done:
            on_done()
    return trails
