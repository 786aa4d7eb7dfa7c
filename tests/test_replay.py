"""Replay every recorded history against the current workflow code: the versioning guard.

If this fails, a change altered what running workflows do. Put the new behaviour behind
workflow.patched (see ARCHITECTURE.md) instead of editing the old path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from core.temporal import DATA_CONVERTER, sandbox_runner
from workflows.household import HouseholdWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_checked_in():
    names = {p.stem for p in HISTORIES}
    assert {"full_path_new_build", "full_path_repair", "send_back_then_full_path", "cancel_after_allocation"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_against_current_code(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[HouseholdWorkflow], data_converter=DATA_CONVERTER, workflow_runner=sandbox_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
