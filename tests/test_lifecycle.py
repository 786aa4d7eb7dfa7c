"""The whole path on the real Temporal dev server and PostgreSQL, and the side paths: send back, cancel."""

from __future__ import annotations

from sqlalchemy import func, select

from db import audit, households, ledger
from db.schema import audit_log, ledger_accounts, ledger_transfers, outbox
from models.household import Stage, Step, workflow_id_for
from models.state import HouseholdWorkflowResult
from operations import sample
from operations.actions import household_state
from tests.conftest import drive_one, enroll, make_households, take_step
from workflows.household import HouseholdWorkflow
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES
from workflows.search_attributes import STAGE

FORWARD_STEPS = [
    Step.VERIFY,
    Step.POST_LIST,  # the reviewed list posted publicly (policy 2026.2)
    Step.APPROVE,
    Step.ALLOCATE,
    Step.REPORT_PROGRESS,  # foundation done (new build) / 30% of the work (repair): tranche 1 falls due
    Step.AUTHORISE_PAYOUT,
    Step.RELEASE_PAYOUT,
    Step.PAYMENT_CONFIRMED,  # recorded from the payment channel's answer
    Step.COMPLETE_CONSTRUCTION,
    Step.ACCEPT,  # tranche 2 falls due
    Step.AUTHORISE_PAYOUT,
    Step.RELEASE_PAYOUT,
    Step.PAYMENT_CONFIRMED,
    Step.SETTLE,
]
OFFICER_STEPS = len(FORWARD_STEPS) - 2


async def _db_facts(sessions, code: str) -> dict:
    async with sessions() as s:
        return {
            "audit_rows": await s.scalar(select(func.count()).where(audit_log.c.household_code == code)),
            "transfers": [
                r.kind
                for r in await s.execute(
                    select(ledger_transfers.c.kind)
                    .where(ledger_transfers.c.household_code == code)
                    .order_by(ledger_transfers.c.id)
                )
            ],
            "account": (
                await s.execute(
                    select(ledger_accounts.c.credits_pending, ledger_accounts.c.credits_posted).where(
                        ledger_accounts.c.code == f"HH:{code}"
                    )
                )
            ).one_or_none(),
            "outbox": sorted(
                r.kind for r in await s.execute(select(outbox.c.kind).where(outbox.c.household_code == code))
            ),
            "row": await households.get(s, code),
            "chain": await audit.verify_chain(s, code),
        }


async def test_new_build_and_repair_go_through_all_six_stages(client, sessions, task_queue):
    # Poor households: the poverty programme's 70/30 tranche plan (other groups' plans are data and may differ).
    new_build, repair = await enroll(
        client,
        sessions,
        task_queue,
        make_households(1, support_type="new_build", beneficiary_group="poor")
        + make_households(1, support_type="repair", beneficiary_group="poor"),
    )
    for h, amount in ((new_build, 60_000_000), (repair, 30_000_000)):
        assert await drive_one(client, sessions, h) == OFFICER_STEPS
        n = len(FORWARD_STEPS)

        state = await household_state(client, h.code)
        assert state.stage is Stage.CLOSED
        assert [e.step for e in state.timeline] == FORWARD_STEPS
        assert (state.entitlement, state.reserved, state.paid) == (amount, 0, amount)
        # 70% after the milestone, the rest after acceptance; each paid only on the channel's confirmation.
        first = amount * 70 // 100
        assert [(t.n, t.amount, t.status.value) for t in state.tranches] == [
            (1, first, "paid"),
            (2, amount - first, "paid"),
        ]
        assert [e.amount for e in state.timeline if e.step is Step.PAYMENT_CONFIRMED] == [first, amount - first]
        assert state.timeline[7].user_id == sample.CHANNEL_USER
        result = await client.get_workflow_handle_for(HouseholdWorkflow.run, workflow_id_for(h.code)).result()
        assert result == HouseholdWorkflowResult(household_code=h.code, stage=Stage.CLOSED, paid=amount, steps=n)

        facts = await _db_facts(sessions, h.code)
        assert facts["audit_rows"] == n
        assert facts["chain"].ok and facts["chain"].rows == n
        # One pending transfer per (tranche, source) piece, each posted once.
        pieces = sum(len(t.pieces) for t in state.tranches)
        assert pieces >= len(state.tranches) == 2  # every tranche has a piece from a source at least
        assert facts["transfers"] == ["pending"] * pieces + ["post_pending"] * pieces  # reserved, then each posted
        assert tuple(facts["account"]) == (0, amount)
        assert (facts["row"].stage, facts["row"].paid, facts["row"].last_seq) == ("closed", amount, n)
        # Hand-overs to the next agency (5 stages + tranche due + 2 authorisations), messages to the
        # household (funds allocated, two tranches received, file closed).
        assert facts["outbox"] == ["household"] * 4 + ["task"] * 8

        description = await client.get_workflow_handle(workflow_id_for(h.code)).describe()
        assert description.typed_search_attributes.get(STAGE) == "closed"


async def test_search_attributes_follow_the_stage_and_carry_no_personal_data(client, sessions, task_queue):
    (h,) = await enroll(client, sessions, task_queue, make_households(1, district="Lộc Bình", commune="Mẫu Sơn"))
    commune = sample.commune_user("Lộc Bình", "Mẫu Sơn")
    await take_step(client, sessions, h.code, Step.VERIFY, commune, evidence=["BB-1"])
    await take_step(client, sessions, h.code, Step.APPROVE, sample.district_user("Lộc Bình"), evidence=["QĐ"])
    handle = client.get_workflow_handle(workflow_id_for(h.code))
    attrs = (await handle.describe()).typed_search_attributes
    ours = {key.name for key in SEARCH_ATTRIBUTES}
    values = {pair.key.name: pair.value for pair in attrs if pair.key.name in ours}
    assert values == {
        "Stage": "fund_allocation",
        "District": "Lộc Bình",
        "Commune": "Mẫu Sơn",
        "BeneficiaryGroup": h.beneficiary_group.value,
        "SupportType": h.support_type.value,
    }
    assert h.cccd not in str(values) and h.head_of_household not in str(values)
    found = [
        w.id
        async for w in client.list_workflows(
            f"Stage='fund_allocation' AND District='Lộc Bình' AND WorkflowId='{handle.id}'"
        )
    ]
    assert found == [handle.id]


async def test_send_back_returns_the_file_and_the_household_can_go_on(client, sessions, task_queue):
    (h,) = await enroll(client, sessions, task_queue, make_households(1, beneficiary_group="poor"))
    commune, district = sample.commune_user(h.district, h.commune), sample.district_user(h.district)
    await take_step(client, sessions, h.code, Step.VERIFY, commune, evidence=["BB-1"])
    back = await take_step(client, sessions, h.code, Step.SEND_BACK, district, reason="thiếu biên bản họp thôn")
    assert (back.from_stage, back.to_stage) == (Stage.APPROVAL, Stage.VERIFICATION)

    assert await drive_one(client, sessions, h) == OFFICER_STEPS
    state = await household_state(client, h.code)
    assert [e.step for e in state.timeline] == [Step.VERIFY, Step.SEND_BACK, *FORWARD_STEPS]
    assert state.timeline[1].reason == "thiếu biên bản họp thôn"
    assert (await _db_facts(sessions, h.code))["chain"].rows == len(FORWARD_STEPS) + 2


async def test_cancel_after_allocation_voids_the_reservation(client, sessions, task_queue):
    (h,) = await enroll(client, sessions, task_queue, make_households(1, support_type="new_build"))
    commune, district = sample.commune_user(h.district, h.commune), sample.district_user(h.district)
    await take_step(client, sessions, h.code, Step.VERIFY, commune, evidence=["BB-1"])
    await take_step(client, sessions, h.code, Step.APPROVE, district, evidence=["QĐ"])
    async with sessions() as s:
        free_before = {b.code: b.free for b in await ledger.source_balances(s)}["NS-TINH"]
    await take_step(client, sessions, h.code, Step.ALLOCATE, "tc.hoang", evidence=["PB-1"], source="NS-TINH")
    async with sessions() as s:
        free_reserved = {b.code: b.free for b in await ledger.source_balances(s)}["NS-TINH"]
    assert free_before - free_reserved == 60_000_000

    result = await take_step(client, sessions, h.code, Step.CANCEL, district, reason="hộ đã được hỗ trợ trước đây")
    assert (result.to_stage, result.released) == (Stage.CANCELLED, 60_000_000)

    facts = await _db_facts(sessions, h.code)
    assert facts["transfers"] == ["pending", "pending", "void_pending", "void_pending"]  # one per tranche
    assert tuple(facts["account"]) == (0, 0)
    assert (facts["row"].stage, facts["row"].reserved, facts["row"].paid) == ("cancelled", 0, 0)
    final = await client.get_workflow_handle_for(HouseholdWorkflow.run, workflow_id_for(h.code)).result()
    assert (final.stage, final.paid) == (Stage.CANCELLED, 0)


async def test_send_back_from_construction_releases_funds_and_reallocation_reserves_again(client, sessions, task_queue):
    (h,) = await enroll(
        client, sessions, task_queue, make_households(1, support_type="repair", beneficiary_group="poor")
    )
    commune, district = sample.commune_user(h.district, h.commune), sample.district_user(h.district)
    await take_step(client, sessions, h.code, Step.VERIFY, commune, evidence=["BB-1"])
    await take_step(client, sessions, h.code, Step.APPROVE, district, evidence=["QĐ"])
    await take_step(client, sessions, h.code, Step.ALLOCATE, "tc.hoang", evidence=["PB-1"], source="NS-TINH")
    back = await take_step(client, sessions, h.code, Step.SEND_BACK, commune, reason="chọn nguồn khác")
    assert (back.to_stage, back.released) == (Stage.FUND_ALLOCATION, 30_000_000)
    await take_step(client, sessions, h.code, Step.ALLOCATE, "tc.hoang", evidence=["PB-2"], source="MTTQ-VD")
    state = await household_state(client, h.code)
    assert (state.stage, state.reserved, state.funding_source) == (Stage.CONSTRUCTION, 30_000_000, "MTTQ-VD")
    assert (await _db_facts(sessions, h.code))["transfers"] == ["pending"] * 2 + ["void_pending"] * 2 + ["pending"] * 2
    assert {p.source for t in state.tranches for p in t.pieces} == {"MTTQ-VD"}
