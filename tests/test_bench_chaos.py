"""bench/chaos.py's pieces that need no servers: the officers' next step judged from a household's state,
the seeded fault plan, and EMBEDDED_STACK (the embedded servers on ports the settings name)."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.chaos import KINDS, next_action, plan_faults, run_env
from bench.driver import province_items
from core.settings import Settings
from models.finance import Milestone, TrancheState, TrancheStatus
from models.household import Stage, Step
from models.state import HouseholdState
from runtime.stack import Stack

S = TrancheStatus


def _state(stage: Stage, *statuses: TrancheStatus) -> HouseholdState:
    milestones = [Milestone.FOUNDATION, Milestone.ACCEPTANCE]
    tranches = [
        TrancheState(n=i + 1, percent=50, milestone=milestones[i], amount=30_000_000, status=s)
        for i, s in enumerate(statuses)
    ]
    return HouseholdState(
        household_code="X", stage=stage, stage_since=datetime.now(UTC), policy_version="v1", tranches=tranches
    )


def test_the_next_step_is_read_from_the_state_as_the_drivers_script_orders_it():
    h = next(h for h in province_items(2025, 20, "") if h.support_type.value == "new_build")

    def step(state):
        found = next_action(h, state)
        return found if found is None or isinstance(found, str) else (found[0], found[2].get("tranche"))

    assert step(_state(Stage.VERIFICATION)) == (Step.VERIFY, None)
    assert step(_state(Stage.FUND_ALLOCATION)) == (Step.ALLOCATE, None)
    assert step(_state(Stage.CONSTRUCTION, S.PLANNED, S.PLANNED)) == (Step.REPORT_PROGRESS, None)
    assert step(_state(Stage.CONSTRUCTION, S.DUE, S.PLANNED)) == (Step.AUTHORISE_PAYOUT, 1)
    assert step(_state(Stage.CONSTRUCTION, S.AUTHORISED, S.PLANNED)) == (Step.RELEASE_PAYOUT, 1)
    assert step(_state(Stage.CONSTRUCTION, S.RELEASED, S.PLANNED)) == (Step.COMPLETE_CONSTRUCTION, None)
    assert step(_state(Stage.ACCEPTANCE, S.PAID, S.PLANNED)) == (Step.ACCEPT, None)
    assert step(_state(Stage.SETTLEMENT, S.PAID, S.DUE)) == (Step.AUTHORISE_PAYOUT, 2)
    assert "waiting for the bank" in step(_state(Stage.SETTLEMENT, S.PAID, S.RELEASED))
    assert step(_state(Stage.SETTLEMENT, S.PAID, S.PAID)) == (Step.SETTLE, None)
    assert step(_state(Stage.CLOSED, S.PAID, S.PAID)) is None


def test_the_fault_plan_is_fixed_by_the_seed():
    counts = {"worker": 10, "postgres": 3, "temporal": 3, "bank": 3}
    a, b = plan_faults(7, counts), plan_faults(7, counts)
    assert [(f.kind, f.planned_progress, f.downtime_s) for f in a] == [
        (f.kind, f.planned_progress, f.downtime_s) for f in b
    ]
    assert sorted(f.kind for f in a) == sorted(k for k in KINDS for _ in range(counts[k]))
    assert all(0.05 <= f.planned_progress <= 0.85 for f in a)
    assert [f.planned_progress for f in a] == sorted(f.planned_progress for f in a)
    assert [f.kind for f in plan_faults(8, counts)] != [f.kind for f in a]


def test_embedded_stack_runs_the_embedded_servers_on_the_ports_the_settings_name(tmp_path):
    env = run_env(tmp_path, workers=1)
    s = Settings(database_url=env["DATABASE_URL"], temporal_address=env["TEMPORAL_ADDRESS"], state_dir=tmp_path)
    assert not Stack(s).embedded_db and not Stack(s).embedded_temporal, "explicitly set: external servers"
    s = s.model_copy(update={"embedded_stack": True})
    assert Stack(s).embedded_db and Stack(s).embedded_temporal
    assert Stack(s).postgres().port == int(env["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0])
    assert Stack(s).temporal().port == int(env["TEMPORAL_ADDRESS"].rsplit(":", 1)[1])
