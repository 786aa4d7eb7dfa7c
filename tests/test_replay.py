"""Replay every recorded history against the current workflow code: the versioning guard.

If this fails, a change altered what running workflows do. Put the new behaviour behind
workflow.patched (see ARCHITECTURE.md) instead of editing the old path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from auditor.history import LOCAL_ACTIVITY_MARKER, read_trail
from core.codec import for_reading
from tests.conftest import SEALED
from workflows.batch import PayoutBatchWorkflow
from workflows.household import SIGNED_PATCH, HouseholdWorkflow
from workflows.runner import workflow_runner

HERE = Path(__file__).parent / "histories"
HISTORIES = sorted(HERE.glob("*.json"))
# The releases recorded by tests/histories/capture_sealed.py, oldest first; `signed_*` is the current code's.
CAPTURED = ("sealed", "local", "inquiry", "signed")
# The paths on which signed actions change what the workflow commands (a payment submitted, asked about or
# escalated, an SLA reminder, a policy change): not a cancel before allocation, whose steps differ only in data
# (the records' assertions), nor the payout batch's workflow.
COMMANDS_CHANGED = (
    "full_path_new_build",
    "send_back_then_full_path",
    "allocation_refused_then_allocated",
    "payment_returned_to_finance",
    "policy_changed_mid_flight",
    "sla_reminder_and_payment_escalation",
    "lost_callback_found_by_inquiry",
    "lost_instruction_sent_again",
)


def test_histories_are_checked_in():
    names = {p.stem for p in HISTORIES}
    # Release 2025.1: one reservation posted at settlement (households allocated before tranches).
    assert {"full_path_new_build", "full_path_repair", "send_back_then_full_path", "cancel_after_allocation"} <= names
    # Release 2025.2: tranches through the payment channel, and the payout batch.
    assert {
        "tranches_full_path_new_build",
        "tranches_full_path_repair",
        "tranches_payment_failed_then_retried",
        "tranches_cancel_after_first_tranche",
        "batch_authorise",
        "batch_authorise_rerun",
        "batch_authorise_asks_every_household",
    } <= names
    # Release 2025.3: payloads sealed by the AES-GCM codec (test key); every path of the current code,
    # timers included (recorded by tests/histories/capture_sealed.py).
    assert {
        "sealed_full_path_new_build",
        "sealed_send_back_then_full_path",
        "sealed_cancel_before_allocation",
        "sealed_allocation_refused_then_allocated",
        "sealed_payment_returned_to_finance",
        "sealed_policy_changed_mid_flight",
        "sealed_batch_release",
        "sealed_sla_reminder_and_payment_escalation",
    } <= names
    # Release 2026.1: the step's record written by a local activity (patch record-step-locally-2026); the
    # same paths again (capture_sealed.py, RELEASE = "local").
    assert {f"local_{n.removeprefix('sealed_')}" for n in names if n.startswith("sealed_")} <= names
    # Release 2026.2: released payments asked about on a schedule (patch payment-inquiry-2026); the same paths
    # again, and a lost callback and a lost instruction recovered by the inquiry (RELEASE = "inquiry").
    assert {f"inquiry_{n.removeprefix('sealed_')}" for n in names if n.startswith("sealed_")} <= names
    assert {"inquiry_lost_callback_found_by_inquiry", "inquiry_lost_instruction_sent_again"} <= names
    # Release 2026.3: signed actions (patch signed-actions-2026); every path of the previous release again, each
    # step, policy change and batch signed by the suite's front door (RELEASE = "signed").
    assert {f"signed_{n.removeprefix('inquiry_')}" for n in names if n.startswith("inquiry_")} <= names


async def test_both_ways_of_writing_a_step_are_read_back_whole():
    """Before the patch a step is an activity the server schedules; after it, a local activity's marker. The
    reader finds the same steps, records and outcomes in both, refusals included."""
    before, after = [
        await read_trail(WorkflowHistory.from_json(n, (HERE / f"{n}.json").read_text()), SEALED)
        for n in ("sealed_allocation_refused_then_allocated", "local_allocation_refused_then_allocated")
    ]
    for trail, markers in ((before, False), (after, True)):
        steps = [
            (t.record.step.value, t.record.actor.user_id, t.recorded, (t.refusal or "").split(":")[0])
            for t in trail.transitions
        ]
        assert steps[:4] == [
            ("verify", steps[0][1], True, ""),
            ("approve", steps[1][1], True, ""),
            ("allocate", "tc.hoang", False, "SourceNotEligible"),
            ("allocate", steps[3][1], True, ""),
        ], (markers, steps)
        assert all(t.outcome.record == (t.record if markers else None) for t in trail.transitions if t.recorded)
    raw = {n: (HERE / f"{n}.json").read_text() for n in ("sealed_full_path_new_build", "local_full_path_new_build")}
    assert LOCAL_ACTIVITY_MARKER not in raw["sealed_full_path_new_build"]
    assert LOCAL_ACTIVITY_MARKER in raw["local_full_path_new_build"]


async def _replay(path: Path, *, sandbox: bool = True):
    """The replay failure of the recorded history against the code as it is (or as patched by a test)."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    # The auditors' side of the codec opens sealed payloads and passes plain ones (histories from before
    # encryption) through; the engine's side refuses them.
    replayer = Replayer(
        workflows=[HouseholdWorkflow, PayoutBatchWorkflow],
        data_converter=for_reading(SEALED),
        workflow_runner=workflow_runner(SEALED, sandbox=sandbox),
    )
    return (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_against_current_code(path: Path):
    failure = await _replay(path)
    assert failure is None, f"{path.name}: {failure}"


def _changed_paths(releases: tuple[str, ...]) -> list[Path]:
    return [p for p in HISTORIES if any(p.stem == f"{r}_{n}" for r in releases for n in COMMANDS_CHANGED)]


@pytest.mark.parametrize("path", _changed_paths(CAPTURED[:-1]), ids=lambda p: p.stem)
async def test_signed_actions_unguarded_would_break_the_earlier_histories(path: Path, monkeypatch):
    """The signed-actions patch matters: with its new branch taken unconditionally (no `workflow.patched`
    guard), a household recorded before it no longer replays."""
    patched = workflow.patched
    monkeypatch.setattr(workflow, "patched", lambda pid: True if pid == SIGNED_PATCH else patched(pid))
    failure = await _replay(path, sandbox=False)  # the module patched above is the one the workflow calls
    assert isinstance(failure, workflow.NondeterminismError), f"{path.name}: {failure!r}"


@pytest.mark.parametrize("path", _changed_paths(CAPTURED[-1:]), ids=lambda p: p.stem)
async def test_the_signed_histories_need_the_new_branch(path: Path, monkeypatch):
    """The other way round: a `signed_*` history replayed by code that meets the patch's marker but keeps the
    old branch (regular activities, the answer asked by check_payment, set_policy unrecorded) does not replay:
    the set records what the patch changed, not the old commands again."""
    patched = workflow.patched
    monkeypatch.setattr(workflow, "patched", lambda pid: patched(pid) and pid != SIGNED_PATCH)
    failure = await _replay(path, sandbox=False)
    assert isinstance(failure, workflow.NondeterminismError), f"{path.name}: {failure!r}"


async def test_the_signed_histories_hold_what_the_patch_changed():
    """Since the patch every step's record carries its assertion, a policy change is a recorded step, and the
    household schedules no activity with the server (payments submitted, asked about and escalated, and
    reminders, all local); the release before has none of that."""
    for release, signed in (("inquiry", False), ("signed", True)):
        for path in [p for p in HISTORIES if p.stem.startswith(f"{release}_")]:
            history = WorkflowHistory.from_json(path.stem, path.read_text())
            trail = await read_trail(history, SEALED)
            if trail.workflow_type != "HouseholdWorkflow":
                continue
            assert trail.transitions, path.stem
            assert all((t.record.assertion is not None) is signed for t in trail.transitions), path.stem
            scheduled = {
                e.activity_task_scheduled_event_attributes.activity_type.name
                for e in history.events
                if e.HasField("activity_task_scheduled_event_attributes")
            }
            if signed:
                assert not scheduled, (path.stem, scheduled)
            elif "cancel" not in path.stem:  # every path but the cancel releases a payment
                assert "submit_payment" in scheduled, (path.stem, scheduled)
            steps = [t.record.step.value for t in trail.transitions if t.recorded]
            assert ("set_policy" in steps) is (signed and "policy_changed" in path.stem), (path.stem, steps)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_the_auditors_reader_takes_every_recorded_history(path: Path):
    """Every release's step records still parse as the engine's models, each recorded step with its outcome."""
    trail = await read_trail(WorkflowHistory.from_json(path.stem, path.read_text()), SEALED)
    assert trail.opened
    if trail.workflow_type == "HouseholdWorkflow":
        recorded = [t for t in trail.transitions if t.recorded]
        assert [t.record.seq for t in recorded] == list(range(1, len(recorded) + 1))
        assert all(t.outcome.audit_hash for t in recorded)


async def test_the_review_histories_hold_the_steps_before_the_money():
    """`review_*` (policy 2026.2, recorded by capture_sealed.py) take the steps the histories before them never
    had, and every earlier file above still replays against the same code: the new steps are new updates,
    gated by the policy's data, not a changed command sequence."""
    path = HERE / "review_objection_override_then_support_type_changed.json"
    trail = await read_trail(WorkflowHistory.from_json(path.stem, path.read_text()), SEALED)
    steps = [t.record.step.value for t in trail.transitions if t.recorded]
    assert steps[:6] == [
        "verify",
        "post_list",
        "record_objection",
        "resolve_objection",
        "override_double_support",
        "approve",
    ]
    assert {"request_change", "decide_change", "settle"} <= set(steps)
    decided = next(t for t in trail.transitions if t.record.step.value == "decide_change")
    assert decided.record.money.value == "adjust" and decided.outcome.released and decided.outcome.amount
    earlier = [p for p in HISTORIES if not p.stem.startswith("review_")]
    for p in earlier:
        old = await read_trail(WorkflowHistory.from_json(p.stem, p.read_text()), SEALED)
        assert not {"post_list", "decide_change"} & {t.record.step.value for t in old.transitions}, p.stem
