"""The rule functions on their own: pure logic, no servers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from core.errors import Refusal
from models import Actor, Jurisdiction, Stage, Step, StepRule, VerifyInput, WorkflowPolicy
from models.finance import AuthorisePayoutInput, BatchAction, BatchSelection, PayoutBatchInput
from models.household import Household
from models.records import MoneyOp, money_effect
from models.state import TimelineEntry
from tests.conftest import FINDINGS
from workflows.rules import check_action, check_actor, target_of

H = Household(
    code="LS-1",
    head_of_household="Nông Văn A",
    cccd="020190000001",
    province="Lạng Sơn",
    district="Lộc Bình",
    commune="Mẫu Sơn",
    beneficiary_group="poor",
    support_type="new_build",
    decision_ref="270/QĐ-UBND",
)
POLICY = WorkflowPolicy(
    version="t",
    steps={
        Step.VERIFY: StepRule(roles=["commune_officer", "district_officer"], responsible_agency="xã"),
        Step.APPROVE: StepRule(roles=["district_officer"], responsible_agency="huyện"),
        Step.CANCEL: StepRule(roles=["district_officer"], responsible_agency="huyện", evidence_required=False),
    },
    distinct_actors=[(Step.VERIFY, Step.APPROVE)],
)


def actor(user="u1", role="district_officer", district="Lộc Bình", commune=None) -> Actor:
    return Actor(
        user_id=user,
        role=role,
        agency="a",
        jurisdiction=Jurisdiction(province="Lạng Sơn", district=district, commune=commune),
    )


def check(step, stage, who, evidence=("doc",), reason=None, timeline=()):
    action = VerifyInput(actor=who, evidence=list(evidence), reason=reason)
    return check_action(step=step, stage=stage, household=H, policy=POLICY, action=action, timeline=timeline)


def test_each_stage_has_exactly_one_forward_step():
    assert target_of(Step.VERIFY, Stage.VERIFICATION, "x").to_stage is Stage.APPROVAL
    assert target_of(Step.SETTLE, Stage.SETTLEMENT, "x").to_stage is Stage.CLOSED
    for stage in (Stage.APPROVAL, Stage.CONSTRUCTION):
        with pytest.raises(Refusal) as v:
            target_of(Step.VERIFY, stage, "x")
        assert v.value.rule == "OutOfOrder"
    with pytest.raises(Refusal):
        target_of(Step.CANCEL, Stage.CLOSED, "x")


def test_send_back_is_governed_by_the_rule_of_the_step_it_refuses():
    t = target_of(Step.SEND_BACK, Stage.APPROVAL, "x")
    assert (t.to_stage, t.governing_step) == (Stage.VERIFICATION, Step.APPROVE)


@pytest.mark.parametrize(
    ("who", "rule"),
    [
        (actor(role="finance_officer", district=None), "RoleNotAllowed"),
        (actor(district="Cao Lộc"), "OutsideJurisdiction"),
        (actor(role="commune_officer", commune="Tú Mịch"), "OutsideJurisdiction"),
    ],
)
def test_role_and_jurisdiction(who, rule):
    with pytest.raises(Refusal) as v:
        check(Step.VERIFY, Stage.VERIFICATION, who)
    assert v.value.rule == rule


def test_segregation_looks_at_who_last_took_the_paired_step():
    entry = TimelineEntry(
        seq=1,
        step=Step.VERIFY,
        from_stage=Stage.VERIFICATION,
        to_stage=Stage.APPROVAL,
        at=datetime.now(UTC),
        user_id="u1",
        role="district_officer",
        agency="a",
        audit_hash="h",
    )
    with pytest.raises(Refusal) as v:
        check(Step.APPROVE, Stage.APPROVAL, actor("u1"), timeline=[entry])
    assert v.value.rule == "SegregationOfDuties"
    assert check(Step.APPROVE, Stage.APPROVAL, actor("u2"), timeline=[entry]).to_stage is Stage.FUND_ALLOCATION


def test_evidence_and_reason():
    with pytest.raises(Refusal) as v:
        check(Step.VERIFY, Stage.VERIFICATION, actor(), evidence=())
    assert v.value.rule == "EvidenceMissing"
    with pytest.raises(Refusal) as v:
        check(Step.CANCEL, Stage.VERIFICATION, actor(), evidence=())
    assert v.value.rule == "ReasonMissing"
    cancelled = check(Step.CANCEL, Stage.VERIFICATION, actor(), evidence=(), reason="đã chuyển đi")
    assert cancelled.to_stage is Stage.CANCELLED


def test_blank_evidence_references_are_rejected_by_the_model():
    with pytest.raises(ValueError):
        VerifyInput(actor=actor(), evidence=["  "], findings=FINDINGS)


def test_payout_and_batch_inputs_share_the_check_and_keep_what_was_signed():
    """A payout step or a batch made new with a blank reference is refused, like a lifecycle step; one read
    back as recorded (signed before the check) is taken as it was; a batch's references stay as signed."""
    selection = BatchSelection(district="Lộc Bình")
    with pytest.raises(ValueError, match="may not be blank"):
        AuthorisePayoutInput(actor=actor(), tranche=1, evidence=["  "])
    with pytest.raises(ValueError, match="may not be blank"):
        PayoutBatchInput(
            batch_id="b", action=BatchAction.AUTHORISE, tranche=1, selection=selection, actor=actor(), evidence=[" "]
        )
    recorded = {"actor": actor().model_dump(mode="json"), "tranche": 1, "evidence": [""]}
    assert AuthorisePayoutInput.model_validate_json(json.dumps(recorded)).evidence == [""]
    assert AuthorisePayoutInput.model_validate(recorded, context={"recorded": True}).evidence == [""]
    padded = PayoutBatchInput(
        batch_id="b", action=BatchAction.AUTHORISE, tranche=1, selection=selection, actor=actor(), evidence=[" QĐ 1 "]
    )
    assert padded.evidence == [" QĐ 1 "]  # its digest is over the references as the officer signed them


def test_jurisdiction_narrowing():
    assert Jurisdiction(province="Lạng Sơn").covers(H)
    assert Jurisdiction(province="Lạng Sơn", district="Lộc Bình", commune="Mẫu Sơn").covers(H)
    assert not Jurisdiction(province="Bắc Giang").covers(H)


def test_money_effect_is_one_definition_for_workflow_state_and_read_model():
    reserve = money_effect(MoneyOp.RESERVE, amount=60_000_000, source="A+B", reserved_before=0, paid_before=0)
    assert reserve == {"entitlement": 60_000_000, "reserved": 60_000_000, "funding_source": "A+B"}
    # A tranche posted: paid adds to what was paid before, reserved keeps the rest.
    first = money_effect(MoneyOp.POST, amount=42_000_000, source=None, reserved_before=60_000_000, paid_before=0)
    assert first == {"reserved": 18_000_000, "paid": 42_000_000}
    second = money_effect(
        MoneyOp.POST, amount=18_000_000, source=None, reserved_before=18_000_000, paid_before=42_000_000
    )
    assert second == {"reserved": 0, "paid": 60_000_000}
    # Cancelled after the first tranche: what was not paid goes back; the source stays on the record.
    assert money_effect(
        MoneyOp.VOID, amount=18_000_000, source=None, reserved_before=18_000_000, paid_before=42_000_000
    ) == {"reserved": 0}
    void = money_effect(MoneyOp.VOID, amount=60_000_000, source=None, reserved_before=60_000_000, paid_before=0)
    assert void == {"reserved": 0, "funding_source": None}
    assert money_effect(MoneyOp.NONE, amount=None, source=None, reserved_before=0, paid_before=5) == {}


def test_a_tranche_pair_is_judged_per_tranche_and_the_importer_per_policy():
    payouts = POLICY.model_copy(
        update={
            "steps": {
                **POLICY.steps,
                Step.RELEASE_PAYOUT: StepRule(roles=["commune_officer"], responsible_agency="xã"),
            },
            "distinct_per_tranche": [(Step.REPORT_PROGRESS, Step.RELEASE_PAYOUT)],
            "importer_may_not": [Step.APPROVE],
        }
    )
    commune = actor(user="x1", role="commune_officer", commune="Mẫu Sơn")
    at = datetime(2026, 3, 1, tzinfo=UTC)
    reported = [
        TimelineEntry(
            seq=4,
            step=Step.REPORT_PROGRESS,
            from_stage=Stage.CONSTRUCTION,
            to_stage=Stage.CONSTRUCTION,
            at=at,
            user_id="x1",
            role="commune_officer",
            agency="a",
            audit_hash="h",
            tranche=1,
        )
    ]

    def release(tranche):
        check_actor(
            step=Step.RELEASE_PAYOUT,
            household=H,
            policy=payouts,
            actor=commune,
            evidence=["UNC"],
            timeline=reported,
            tranche=tranche,
        )

    with pytest.raises(Refusal) as v:
        release(1)
    assert v.value.rule == "SegregationOfDuties" and "tranche 1" in v.value.message
    release(2)  # another tranche: nothing this officer reported
    importer = actor(user="h1")
    with pytest.raises(Refusal) as v:
        check_action(
            step=Step.APPROVE,
            stage=Stage.APPROVAL,
            household=H,
            policy=payouts,
            action=VerifyInput(actor=importer, evidence=["QĐ"], findings=FINDINGS),
            timeline=(),
            imported_by="h1",
        )
    assert v.value.rule == "SegregationOfDuties" and "imported the list" in v.value.message
    check_action(
        step=Step.APPROVE,
        stage=Stage.APPROVAL,
        household=H,
        policy=payouts,
        action=VerifyInput(actor=importer, evidence=["QĐ"], findings=FINDINGS),
        timeline=(),
        imported_by="p1",
    )
    # The rule is data: a policy without it lets the importer approve.
    check_action(
        step=Step.APPROVE,
        stage=Stage.APPROVAL,
        household=H,
        policy=POLICY,
        action=VerifyInput(actor=importer, evidence=["QĐ"], findings=FINDINGS),
        timeline=(),
        imported_by="h1",
    )


@pytest.mark.parametrize("field", ["restore_roles", "codec_roles", "finance_roles", "loan_roles"])
def test_a_policy_that_leaves_a_power_to_nobody_is_refused(field):
    with pytest.raises(ValueError, match=field):
        WorkflowPolicy.model_validate(POLICY.model_dump() | {field: []})
