"""The allocation policy, the tranche cut and the payout rules, as pure functions."""

from __future__ import annotations

import pytest

from core.errors import Refusal
from finance.allocation import plan_allocation, split_into_tranches
from models.actor import Actor, Jurisdiction
from models.allocation import AllocationPolicy, SourceRules, SourceView, Tier
from models.finance import Milestone, Piece, TranchePlan, TrancheSpec, TrancheState, TrancheStatus
from models.household import Household, Stage, Step
from workflows.rules import Target, check_money, check_payout

M = 1_000_000
POLICY = AllocationPolicy(
    version="t",
    tiers=[
        Tier(
            name="programme",
            categories=["national_target_programme", "district_advance"],
            programme_households_only=True,
            max_per_house={"new_build": 40 * M, "repair": 20 * M},
        ),
        Tier(name="pool", categories=["provincial_budget", "storm_relief"]),
        Tier(name="donations", categories=["donation"]),
    ],
)


def household(programme=None, support="new_build", district="Lộc Bình", group="poor") -> Household:
    return Household(
        code="LS-1",
        head_of_household="Nông Văn A",
        cccd="020190000001",
        province="Lạng Sơn",
        district=district,
        commune="Mẫu Sơn",
        beneficiary_group=group,
        support_type=support,
        decision_ref="270/QĐ-UBND",
        programme=programme,
    )


def src(code, category, free, priority=100, **rules) -> SourceView:
    return SourceView(code=code, category=category, priority=priority, free=free, rules=SourceRules(**rules))


SOURCES = [
    src("GNBV", "national_target_programme", 500 * M, 10, programmes=["MTQG-GNBV"]),
    src("ADV-LB", "district_advance", 500 * M, 20, programmes=["MTQG-GNBV"], districts=["Lộc Bình"]),
    src("NS", "provincial_budget", 500 * M, 10),
    src("DON", "donation", 500 * M),
]


def test_a_programme_household_is_covered_by_its_programme_first_up_to_the_cap_then_by_the_pool():
    assert plan_allocation(household("MTQG-GNBV"), 60 * M, SOURCES, POLICY) == [("GNBV", 40 * M), ("NS", 20 * M)]
    assert plan_allocation(household("MTQG-GNBV", "repair"), 30 * M, SOURCES, POLICY) == [
        ("GNBV", 20 * M),
        ("NS", 10 * M),
    ]


def test_when_the_programme_runs_short_the_districts_advance_fills_its_share_and_the_cap_holds_across_both():
    short = [src("GNBV", "national_target_programme", 15 * M, 10, programmes=["MTQG-GNBV"]), *SOURCES[1:]]
    assert plan_allocation(household("MTQG-GNBV"), 60 * M, short, POLICY) == [
        ("GNBV", 15 * M),
        ("ADV-LB", 25 * M),
        ("NS", 20 * M),
    ]
    # The advance is Lộc Bình's own money: a household elsewhere never draws on it.
    assert plan_allocation(household("MTQG-GNBV", district="Chi Lăng"), 60 * M, short, POLICY) == [
        ("GNBV", 15 * M),
        ("NS", 45 * M),
    ]


def test_others_start_at_the_pool_and_donations_fill_what_the_pool_lacks():
    pool_short = [*SOURCES[:2], src("NS", "provincial_budget", 35 * M, 10), SOURCES[3]]
    assert plan_allocation(household(None), 60 * M, pool_short, POLICY) == [("NS", 35 * M), ("DON", 25 * M)]


def test_not_enough_in_every_eligible_source_is_refused_with_the_figures():
    empty = [src("NS", "provincial_budget", 10 * M), src("DON", "donation", 5 * M)]
    with pytest.raises(Refusal) as e:
        plan_allocation(household(None), 60 * M, empty, POLICY)
    assert e.value.rule == "InsufficientFunds"
    assert "60,000,000" in e.value.message and "15,000,000" in e.value.message


def test_tranches_cut_the_pieces_in_order_and_add_up_to_the_entitlement():
    plan = TranchePlan(
        tranches=[TrancheSpec(percent=70, milestone="foundation"), TrancheSpec(percent=30, milestone="acceptance")]
    )
    assert split_into_tranches([("GNBV", 40 * M), ("NS", 20 * M)], plan, 60 * M) == [
        [("GNBV", 40 * M), ("NS", 2 * M)],
        [("NS", 18 * M)],
    ]
    # Whole đồng: the last tranche takes the remainder.
    assert plan.amounts(1_000_001) == [700_000, 300_001]
    with pytest.raises(ValueError):
        TranchePlan(tranches=[TrancheSpec(percent=70, milestone="foundation")]).amounts(60 * M)


ACTOR = Actor(user_id="tc.a", role="finance_officer", agency="STC", jurisdiction=Jurisdiction(province="Lạng Sơn"))


def tranches(*statuses: TrancheStatus, authorised_by=None) -> list[TrancheState]:
    specs = [(1, 70, Milestone.FOUNDATION), (2, 30, Milestone.ACCEPTANCE)]
    return [
        TrancheState(
            n=n,
            percent=p,
            milestone=m,
            amount=p * M,
            status=s,
            authorised_by=authorised_by,
            pieces=[Piece(transfer_id=n, source="NS", amount=p * M)],
        )
        for (n, p, m), s in zip(specs, statuses, strict=False)
    ]


def refused(fn) -> str:
    with pytest.raises(Refusal) as e:
        fn()
    return e.value.rule


def test_payout_steps_follow_their_order_and_the_authoriser_never_releases():
    def payout(step, ts, tranche=1, milestone=None, stage=Stage.CONSTRUCTION, actor=ACTOR):
        return lambda: check_payout(
            step=step, stage=stage, household_code="X", tranches=ts, tranche=tranche, milestone=milestone, actor=actor
        )

    planned = tranches(TrancheStatus.PLANNED, TrancheStatus.PLANNED)
    assert refused(payout(Step.AUTHORISE_PAYOUT, planned)) == "OutOfOrder"  # not due yet
    assert refused(payout(Step.REPORT_PROGRESS, planned, milestone=Milestone.PROGRESS_30)) == "UnknownMilestone"
    assert payout(Step.REPORT_PROGRESS, planned, milestone=Milestone.FOUNDATION)().n == 1
    assert (
        refused(payout(Step.REPORT_PROGRESS, planned, milestone=Milestone.FOUNDATION, stage=Stage.ACCEPTANCE))
        == "OutOfOrder"
    )
    assert refused(payout(Step.AUTHORISE_PAYOUT, [], tranche=1)) == "NoTranches"
    due = tranches(TrancheStatus.DUE, TrancheStatus.PLANNED)
    assert payout(Step.AUTHORISE_PAYOUT, due)().n == 1
    assert refused(payout(Step.RELEASE_PAYOUT, due)) == "OutOfOrder"  # not authorised
    assert refused(payout(Step.AUTHORISE_PAYOUT, due, tranche=3)) == "UnknownTranche"
    authorised = tranches(TrancheStatus.AUTHORISED, TrancheStatus.PLANNED, authorised_by="tc.a")
    assert refused(payout(Step.RELEASE_PAYOUT, authorised)) == "SegregationOfDuties"
    other = ACTOR.model_copy(update={"user_id": "kb.b"})
    assert payout(Step.RELEASE_PAYOUT, authorised, actor=other)().n == 1


def test_money_in_tranches_cannot_be_closed_unpaid_or_undone_once_paid_or_in_flight():
    def money(step, to_stage, ts):
        return lambda: check_money(step, Target(to_stage, step), ts, "X")

    half_paid = tranches(TrancheStatus.PAID, TrancheStatus.DUE)
    assert refused(money(Step.SETTLE, Stage.CLOSED, half_paid)) == "PaymentsOutstanding"
    money(Step.SETTLE, Stage.CLOSED, tranches(TrancheStatus.PAID, TrancheStatus.PAID))()
    in_flight = tranches(TrancheStatus.RELEASED, TrancheStatus.PLANNED)
    assert refused(money(Step.CANCEL, Stage.CANCELLED, in_flight)) == "PaymentInFlight"
    paid_first = tranches(TrancheStatus.PAID, TrancheStatus.PLANNED)
    assert refused(money(Step.SEND_BACK, Stage.FUND_ALLOCATION, paid_first)) == "PaymentsMade"
    money(Step.CANCEL, Stage.CANCELLED, paid_first)()  # cancelling releases what is left; paid money stays paid
    money(Step.SEND_BACK, Stage.CONSTRUCTION, in_flight)()  # acceptance → construction moves no money
