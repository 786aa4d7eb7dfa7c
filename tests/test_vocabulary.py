"""One home per rule: the stage and step vocabulary, the SLA deadline and the send-back rule, each defined once
and read by the pages, the timeline, the notifications, the workflow and the auditor. Pure: no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.formatting import amount, day, dong
from models import Stage, Step, StepRule, WorkflowPolicy
from models.household import FORWARD, PREVIOUS
from models.vocabulary import STAGES, STEPS, stage_name, step_name, title
from web.i18n import Words
from workflows.rules import governing_step, sla_due, target_of


def test_every_stage_and_step_has_a_vietnamese_and_an_english_name():
    assert set(STAGES) == set(Stage) and set(STEPS) == set(Step)
    for name in [*STAGES.values(), *STEPS.values()]:
        assert name.vi and name.en and name.vi == name.vi.lower()


def test_the_pages_and_the_sentences_use_the_same_words():
    vi, en = Words("vi"), Words("en")
    for stage in Stage:
        assert vi.stage(stage) == title(stage_name(stage)) and en.stage(stage) == stage_name(stage, "en")
    for step in Step:
        assert vi.step(step) == title(step_name(step)) and en.step(step) == step_name(step, "en")
    # The programme's documents' terms (notifications say "chờ bước phân bổ kinh phí").
    assert stage_name(Stage.FUND_ALLOCATION) == "phân bổ kinh phí" and vi.stage(Stage.APPROVAL) == "Phê duyệt"
    assert en.stage(Stage.FUND_ALLOCATION) == "fund allocation" and en.step(Step.COMPLETE_CONSTRUCTION) == (
        "complete construction"
    )
    # A timeline line in English says the step was taken.
    assert title(step_name(Step.ALLOCATE, "en", done=True)) == "Funds allocated"
    assert title(step_name(Step.SETTLE, "en", done=True)) == "Settled"


def test_money_and_dates_are_written_by_one_helper():
    assert (amount(1_200_000), dong(1_200_000), dong(None, "en")) == ("1.200.000", "1.200.000 đ", "0 VND")
    assert day(datetime(2025, 4, 29, 18, 0, tzinfo=UTC)) == "30/04/2025"  # Vietnam's calendar (UTC+7)


def test_the_sla_deadline_is_entry_plus_the_stage_s_days_and_each_reminder_another_period():
    policy = WorkflowPolicy(
        version="t",
        steps={Step.VERIFY: StepRule(roles=["commune_officer"], responsible_agency="xã")},
        sla_days={Stage.VERIFICATION: 30},
    )
    since = datetime(2025, 3, 1, 8, tzinfo=UTC)
    assert sla_due(policy, Stage.VERIFICATION, since) == since + timedelta(days=30)
    assert sla_due(policy, Stage.VERIFICATION, since, reminders=2) == since + timedelta(days=90)
    assert sla_due(policy, Stage.APPROVAL, since) is None and sla_due(policy, Stage.VERIFICATION, None) is None


def test_a_send_back_is_governed_by_the_step_it_refuses_and_returns_to_the_stage_before():
    for stage, before in PREVIOUS.items():
        assert governing_step(Step.SEND_BACK, stage) is FORWARD[stage][0]
        target = target_of(Step.SEND_BACK, stage, "LS-1")
        assert (target.to_stage, target.governing_step) == (before, FORWARD[stage][0])
    assert governing_step(Step.CANCEL, Stage.APPROVAL) is Step.CANCEL
    assert governing_step(Step.VERIFY, Stage.VERIFICATION) is Step.VERIFY
