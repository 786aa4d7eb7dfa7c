"""The replay guard guards: a household workflow changed without `workflow.patched` fails to replay a recorded
history, under the very replayer and sandboxed runner of tests/test_replay.py (its `_replay`, whose
`HouseholdWorkflow` is swapped for the changed copy), while the code as it is replays the same history cleanly.

If the replay check ever stopped comparing commands (a runner that swallows failures, a replayer given no
histories, a converter that cannot open them), the first assertion here fails, not only the second.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from models.state import HouseholdWorkflowInput, HouseholdWorkflowResult
from workflows.household import HouseholdWorkflow

# The sandbox imports this module afresh to find the changed workflows: the test's helpers come from the host.
with workflow.unsafe.imports_passed_through():
    import pytest

    from tests import test_replay

# A history recorded by the current release (tests/histories/capture_sealed.py, RELEASE = "signed"): the whole
# path of a new build, every step signed, sealed with the test key.
RECORDED = test_replay.HERE / "signed_full_path_new_build.json"


@workflow.defn(name="HouseholdWorkflow")
class ExtraActivityFirst(HouseholdWorkflow):
    """The deploy nobody guarded: an activity scheduled before the household's first wait."""

    @workflow.run
    async def run(self, inp: HouseholdWorkflowInput) -> HouseholdWorkflowResult:
        await workflow.execute_activity(
            "check_the_list_again", inp.household.code, start_to_close_timeout=timedelta(seconds=30)
        )
        return await super().run(inp)


@workflow.defn(name="HouseholdWorkflow")
class ExtraTimerFirst(HouseholdWorkflow):
    """The same with a timer: a day's grace before the stage's SLA clock starts."""

    @workflow.run
    async def run(self, inp: HouseholdWorkflowInput) -> HouseholdWorkflowResult:
        await workflow.sleep(timedelta(days=1))
        return await super().run(inp)


@pytest.mark.parametrize("changed", [ExtraActivityFirst, ExtraTimerFirst], ids=lambda c: c.__name__)
async def test_a_changed_household_workflow_fails_to_replay_a_recorded_history(changed, monkeypatch):
    assert RECORDED.exists()
    assert await test_replay._replay(RECORDED) is None, "the code as it is must replay its own history"
    monkeypatch.setattr(test_replay, "HouseholdWorkflow", changed)
    failure = await test_replay._replay(RECORDED)
    assert isinstance(failure, workflow.NondeterminismError), f"{changed.__name__}: {failure!r}"
    assert "[TMPRL1100] Nondeterminism error" in str(failure), str(failure)
    monkeypatch.undo()
    assert await test_replay._replay(RECORDED) is None, "the guard's check must leave the replayer as it was"
