"""Replay every recorded history against the current workflow code: the versioning guard.

If this fails, a change altered what running workflows do. Put the new behaviour behind
workflow.patched (see ARCHITECTURE.md) instead of editing the old path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from auditor.history import LOCAL_ACTIVITY_MARKER, read_trail
from core.codec import for_reading
from core.temporal import workflow_runner
from tests.conftest import SEALED
from workflows.batch import PayoutBatchWorkflow
from workflows.household import HouseholdWorkflow

HERE = Path(__file__).parent / "histories"
HISTORIES = sorted(HERE.glob("*.json"))


def test_histories_are_checked_in():
    names = {p.stem for p in HISTORIES}
    # Release 2025.1: one reservation posted at settlement (households allocated before tranches).
    assert {"full_path_new_build", "full_path_repair", "send_back_then_full_path", "cancel_after_allocation"} <= names
    # Release 2025.2: tranches through the payment channel, and the payout batch.
    assert {"tranches_full_path_new_build", "tranches_full_path_repair", "tranches_payment_failed_then_retried",
            "tranches_cancel_after_first_tranche", "batch_authorise", "batch_authorise_rerun",
            "batch_authorise_asks_every_household"} <= names  # fmt: skip
    # Release 2025.3: payloads sealed by the AES-GCM codec (test key); every path of the current code,
    # timers included (recorded by tests/histories/capture_sealed.py).
    assert {"sealed_full_path_new_build", "sealed_send_back_then_full_path", "sealed_cancel_before_allocation",
            "sealed_allocation_refused_then_allocated", "sealed_payment_returned_to_finance",
            "sealed_policy_changed_mid_flight", "sealed_batch_release",
            "sealed_sla_reminder_and_payment_escalation"} <= names  # fmt: skip
    # Release 2026.1: the step's record written by a local activity (patch record-step-locally-2026); the
    # same paths again (capture_sealed.py, RELEASE = "local").
    assert {f"local_{n.removeprefix('sealed_')}" for n in names if n.startswith("sealed_")} <= names
    # Release 2026.2: released payments asked about on a schedule (patch payment-inquiry-2026); the same paths
    # again, and a lost callback and a lost instruction recovered by the inquiry (RELEASE = "inquiry").
    assert {f"inquiry_{n.removeprefix('sealed_')}" for n in names if n.startswith("sealed_")} <= names
    assert {"inquiry_lost_callback_found_by_inquiry", "inquiry_lost_instruction_sent_again"} <= names


async def test_both_ways_of_writing_a_step_are_read_back_whole():
    """Before the patch a step is an activity the server schedules; after it, a local activity's marker. The
    reader finds the same steps, records and outcomes in both, refusals included."""
    before, after = [await read_trail(WorkflowHistory.from_json(n, (HERE / f"{n}.json").read_text()), SEALED)
                     for n in ("sealed_allocation_refused_then_allocated", "local_allocation_refused_then_allocated")]
    for trail, markers in ((before, False), (after, True)):
        steps = [(t.record.step.value, t.record.actor.user_id, t.recorded, (t.refusal or "").split(":")[0])
                 for t in trail.transitions]  # fmt: skip
        assert steps[:4] == [("verify", steps[0][1], True, ""), ("approve", steps[1][1], True, ""),
                             ("allocate", "tc.hoang", False, "SourceNotEligible"),
                             ("allocate", steps[3][1], True, "")], (markers, steps)  # fmt: skip
        assert all(t.outcome.record == (t.record if markers else None) for t in trail.transitions if t.recorded)
    raw = {n: (HERE / f"{n}.json").read_text() for n in ("sealed_full_path_new_build", "local_full_path_new_build")}
    assert LOCAL_ACTIVITY_MARKER not in raw["sealed_full_path_new_build"]
    assert LOCAL_ACTIVITY_MARKER in raw["local_full_path_new_build"]


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_against_current_code(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    # The auditors' side of the codec opens sealed payloads and passes plain ones (histories from before
    # encryption) through; the engine's side refuses them.
    replayer = Replayer(workflows=[HouseholdWorkflow, PayoutBatchWorkflow], data_converter=for_reading(SEALED),
                        workflow_runner=workflow_runner(SEALED))  # fmt: skip
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_the_auditors_reader_takes_every_recorded_history(path: Path):
    """Every release's step records still parse as the engine's models, each recorded step with its outcome."""
    trail = await read_trail(WorkflowHistory.from_json(path.stem, path.read_text()), SEALED)
    assert trail.opened
    if trail.workflow_type == "HouseholdWorkflow":
        recorded = [t for t in trail.transitions if t.recorded]
        assert [t.record.seq for t in recorded] == list(range(1, len(recorded) + 1))
        assert all(t.outcome.audit_hash for t in recorded)
