"""Before the money, on the real Temporal dev server and PostgreSQL (policy 2026.2, migration 0016): eligibility
on record, the public posting and its objections, double support caught across programmes, and changes to an
approved household re-approved by another officer. Every refusal is asserted by the rule it names, and a
refused step writes nothing."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from activities.household import HouseholdActivities
from auditor.records import read_records
from auditor.verify import verify
from core.errors import Refusal
from core.formatting import today
from db import ledger
from db import policy as policy_db
from db import users as users_db
from db.schema import audit_log, households, ledger_accounts, payments
from models.finance import TrancheStatus
from models.household import Stage, Step, SupportType
from models.review import ItemStatus
from operations import actions, registry, sample
from operations.actions import household_state
from operations.demo import drive_until
from tests.conftest import FINDINGS, FRONT_DOOR, enroll, make_households, take_step
from tests.test_audit import trails_of

PROGRAMME = "CT-135"


async def _step(client, sessions, h, step: Step, user: str, evidence=("DOC",), reason=None, **details):
    """A step as a front door sends it, with no help from the suite (tests/conftest.take_step posts and finds)."""
    return await actions.take_step(
        client,
        sessions,
        h.code,
        step,
        user,
        evidence=list(evidence),
        reason=reason,
        details=details,
        signer=FRONT_DOOR,
    )


async def _audit_rows(sessions, code: str) -> int:
    async with sessions() as s:
        return await s.scalar(select(func.count()).where(audit_log.c.household_code == code))


async def _refused(client, sessions, h, step: Step, user: str, **kw) -> Refusal:
    before = await household_state(client, h.code)
    rows = await _audit_rows(sessions, h.code)
    with pytest.raises(Refusal) as caught:
        await _step(client, sessions, h, step, user, **kw)
    assert await household_state(client, h.code) == before, "a refused step must not change the household"
    assert await _audit_rows(sessions, h.code) == rows, "a refused step must write nothing"
    return caught.value


def _officers(h) -> tuple[str, str]:
    return sample.officers_of(h.district, h.commune)


async def _household(client, sessions, task_queue, **kw):
    kw.setdefault("district", "Cao Lộc")
    kw.setdefault("commune", "Hải Yến")
    (h,) = await enroll(client, sessions, task_queue, make_households(1, **kw))
    return h


async def _verified(client, sessions, h):
    commune, _ = _officers(h)
    await _step(client, sessions, h, Step.VERIFY, commune, findings=FINDINGS.model_dump(mode="json"))


async def _posted(client, sessions, h, days_ago: int = sample.POSTED_DAYS_AGO):
    commune, _ = _officers(h)
    on = today() - timedelta(days=days_ago)
    return await _step(client, sessions, h, Step.POST_LIST, commune, ["TB-NIEM-YET"], **sample.posting_for(h, on))


async def _raised(client, sessions, h, posted, about: str = "Hộ đã có nhà", by: str | None = None):
    """An objection raised the day before the posting ended, recorded by the household's commune officer."""
    return await _step(
        client,
        sessions,
        h,
        Step.RECORD_OBJECTION,
        by or _officers(h)[0],
        objector="Trưởng thôn",
        about=about,
        raised_on=posted.period_ends - timedelta(days=1),
    )


# ------------------------------------------------------------------ eligibility on record


async def test_verification_records_what_was_found_and_refuses_a_household_that_meets_no_criterion(
    client, sessions, task_queue
):
    h = await _household(client, sessions, task_queue)
    commune, _ = _officers(h)
    assert (await _refused(client, sessions, h, Step.VERIFY, commune)).rule == "FindingsMissing"
    durable = {"foundation": "durable", "frame": "durable", "roof": "non_durable"}
    roomy = {**durable, "floor_area_m2": 40, "household_size": 4}
    r = await _refused(client, sessions, h, Step.VERIFY, commune, findings=roomy)
    assert r.rule == "NotEligible" and "Điều 3" in r.message
    assert "1 of its 3 main parts" in r.message and "10.0 m² per person" in r.message
    supported = FINDINGS.model_dump(mode="json") | {"earlier_support": "Chương trình 167, năm 2012"}
    r = await _refused(client, sessions, h, Step.VERIFY, commune, findings=supported)
    assert r.rule == "NotEligible" and "Chương trình 167" in r.message
    incomplete = {"foundation": "durable", "roof": "non_durable"}
    r = await _refused(client, sessions, h, Step.VERIFY, commune, findings=incomplete)
    assert r.rule == "InvalidInput" and "frame" in r.message

    # Crowded (under 8 m² a person) qualifies with durable parts; no house at all qualifies with nothing else.
    crowded = {**durable, "floor_area_m2": 30, "household_size": 5}
    done = await _step(client, sessions, h, Step.VERIFY, commune, findings=crowded)
    assert done.to_stage is Stage.APPROVAL
    state = await household_state(client, h.code)
    assert state.findings is not None and state.findings.area_per_person == 6
    async with sessions() as s:
        signed = await s.scalar(
            select(audit_log.c.signed_input).where(audit_log.c.household_code == h.code, audit_log.c.step == "verify")
        )
    assert signed["findings"]["floor_area_m2"] == 30 and signed["findings"]["frame"] == "durable"

    homeless = await _household(client, sessions, task_queue)
    done = await _step(client, sessions, homeless, Step.VERIFY, commune, findings={"has_house": False})
    assert done.to_stage is Stage.APPROVAL


# ------------------------------------------------------------------ the posting and its objections


async def test_approval_waits_for_the_posting_period_to_end(client, sessions, task_queue):
    h = await _household(client, sessions, task_queue)
    commune, district = _officers(h)
    await _verified(client, sessions, h)
    r = await _refused(client, sessions, h, Step.APPROVE, district)
    assert r.rule == "NotPosted" and "5 days" in r.message
    place = sample.posting_for(h, today())["place"]
    tomorrow = (today() + timedelta(days=1)).isoformat()
    r = await _refused(client, sessions, h, Step.POST_LIST, commune, place=place, posted_on=tomorrow)
    assert r.rule == "PostingDate" and "future" in r.message
    long_ago = (today() - timedelta(days=61)).isoformat()
    r = await _refused(client, sessions, h, Step.POST_LIST, commune, place=place, posted_on=long_ago)
    assert r.rule == "PostingDate" and "post the list again" in r.message
    r = await _refused(client, sessions, h, Step.POST_LIST, district, place=place, posted_on=today().isoformat())
    assert r.rule == "RoleNotAllowed"

    posted = await _posted(client, sessions, h, days_ago=2)
    assert posted.period_ends == today() + timedelta(days=3)
    r = await _refused(client, sessions, h, Step.APPROVE, district)
    assert r.rule == "PostingPeriod" and f"{posted.period_ends:%d/%m/%Y}" in r.message
    r = await _refused(client, sessions, h, Step.POST_LIST, commune, place=place, posted_on=today().isoformat())
    assert r.rule == "AlreadyPosted"
    state = await household_state(client, h.code)
    assert state.posting.place == place and state.timeline[-1].step is Step.POST_LIST


async def test_an_open_objection_blocks_approval_until_someone_other_than_the_verifier_resolves_it(
    client, sessions, task_queue
):
    h = await _household(client, sessions, task_queue)
    commune, district = _officers(h)
    await _verified(client, sessions, h)
    posted = await _posted(client, sessions, h)
    on = posted.period_ends - timedelta(days=1)  # the posting's last day
    objection = {"objector": "Ông Lý Văn Tám", "about": "Hộ đã có nhà kiên cố"}
    r = await _refused(client, sessions, h, Step.RECORD_OBJECTION, commune, **objection)
    assert r.rule == "PostingClosed"  # raised today: the period is over
    early = (today() - timedelta(days=20)).isoformat()
    r = await _refused(client, sessions, h, Step.RECORD_OBJECTION, commune, **objection, raised_on=early)
    assert r.rule == "ObjectionDate"
    raised = await _step(client, sessions, h, Step.RECORD_OBJECTION, commune, **objection, raised_on=on.isoformat())

    r = await _refused(client, sessions, h, Step.APPROVE, district)
    assert r.rule == "ObjectionOpen" and str(raised.objection) in r.message
    resolve = {"objection": raised.objection, "outcome": "dismissed"}
    r = await _refused(client, sessions, h, Step.RESOLVE_OBJECTION, district, **resolve)
    assert r.rule == "ReasonMissing"
    r = await _refused(client, sessions, h, Step.RESOLVE_OBJECTION, commune, reason="không có cơ sở", **resolve)
    assert r.rule == "SegregationOfDuties"  # the commune officer verified this household
    r = await _refused(
        client, sessions, h, Step.RESOLVE_OBJECTION, district, reason="x", objection=999, outcome="dismissed"
    )
    assert r.rule == "UnknownObjection"
    done = await _step(client, sessions, h, Step.RESOLVE_OBJECTION, district, reason="không có cơ sở", **resolve)
    assert done.to_stage is Stage.APPROVAL
    r = await _refused(client, sessions, h, Step.RESOLVE_OBJECTION, district, reason="again", **resolve)
    assert r.rule == "AlreadyResolved"
    (o,) = (await household_state(client, h.code)).objections
    assert (o.status, o.resolved_by, o.raised_on, o.objector) == (ItemStatus.DISMISSED, district, on, "Ông Lý Văn Tám")
    assert (await _step(client, sessions, h, Step.APPROVE, district)).to_stage is Stage.FUND_ALLOCATION


async def test_an_upheld_objection_sends_the_household_back_to_be_reviewed_or_takes_it_off_the_list(
    client, sessions, task_queue
):
    back, off = [await _household(client, sessions, task_queue) for _ in range(2)]
    for h, outcome in ((back, "upheld_send_back"), (off, "upheld_cancel")):
        commune, district = _officers(h)
        await _verified(client, sessions, h)
        posted = await _posted(client, sessions, h)
        raised = await _raised(client, sessions, h, posted, "Hộ đã chuyển đi nơi khác")
        await _step(
            client,
            sessions,
            h,
            Step.RESOLVE_OBJECTION,
            district,
            reason="Có cơ sở",
            objection=raised.objection,
            outcome=outcome,
        )
    state = await household_state(client, back.code)
    assert state.stage is Stage.VERIFICATION and state.posting is None  # reviewed again, then posted again
    await _verified(client, sessions, back)
    await _posted(client, sessions, back)
    assert (await _step(client, sessions, back, Step.APPROVE, _officers(back)[1])).to_stage is Stage.FUND_ALLOCATION
    assert (await household_state(client, off.code)).stage is Stage.CANCELLED


# ------------------------------------------------------------------ double support across programmes


async def test_a_household_on_another_programmes_list_waits_for_an_override_that_is_on_record(
    client, sessions, owner_sessions, task_queue
):
    key = secrets.token_bytes(32)
    h = await _household(client, sessions, task_queue)
    async with sessions() as s, s.begin():  # what the list import does with MATCH_KEY_PATH
        await registry.key_households(s, key, [(h.code, h.cccd)])
    other = "\n".join(["cccd,year,note", f"{h.cccd},2019,CT-135 nhà ở", "020188777001,2019,"]).encode()
    imported = await registry.import_list(
        owner_sessions, other, "ct135.csv", programme=PROGRAMME, user_id=sample.FINANCE_USERS[0], key=key
    )
    assert imported.matched >= 1
    _, district = _officers(h)
    await _verified(client, sessions, h)
    await _posted(client, sessions, h)
    r = await _refused(client, sessions, h, Step.APPROVE, district)
    assert r.rule == "DoubleSupport" and PROGRAMME in r.message

    why = "CT-135 hỗ trợ nước sạch, không hỗ trợ nhà ở"
    r = await _refused(client, sessions, h, Step.OVERRIDE_DOUBLE_SUPPORT, district, reason=why, programme=PROGRAMME)
    assert r.rule == "RoleNotAllowed"
    r = await _refused(client, sessions, h, Step.OVERRIDE_DOUBLE_SUPPORT, sample.PROVINCE_USER, programme=PROGRAMME)
    assert r.rule == "ReasonMissing"
    r = await _refused(
        client, sessions, h, Step.OVERRIDE_DOUBLE_SUPPORT, sample.PROVINCE_USER, reason=why, programme="NQ-33"
    )
    assert "NQ-33" in r.message  # no such match to set aside
    await _step(
        client,
        sessions,
        h,
        Step.OVERRIDE_DOUBLE_SUPPORT,
        sample.PROVINCE_USER,
        ["CV-XAC-MINH"],
        why,
        programme=PROGRAMME,
    )
    r = await _refused(
        client, sessions, h, Step.OVERRIDE_DOUBLE_SUPPORT, sample.PROVINCE_USER, reason=why, programme=PROGRAMME
    )
    assert r.rule == "AlreadyOverridden"
    assert (await _step(client, sessions, h, Step.APPROVE, district)).to_stage is Stage.FUND_ALLOCATION

    rows = [m for m in await registry.report(sessions, sample.FINANCE_USERS[0]) if m.household_code == h.code]
    assert [(m.programme, m.overridden_by, m.reason) for m in rows] == [(PROGRAMME, sample.PROVINCE_USER, why)]
    async with sessions() as s:
        steps = list(
            await s.scalars(
                select(audit_log.c.step).where(audit_log.c.household_code == h.code).order_by(audit_log.c.seq)
            )
        )
    assert steps == ["verify", "post_list", "override_double_support", "approve"]


# ------------------------------------------------------------------ changes re-approved


async def _until(client, sessions, h, done):
    """Take the household's steps as the demo's officers do until `done(state)` (operations.demo.drive_until)."""
    return await drive_until(client, sessions, h, done, signer=FRONT_DOOR)


def _paid(state) -> bool:
    return any(t.status is TrancheStatus.PAID for t in state.tranches)


async def test_a_change_of_support_type_after_a_paid_tranche_reserves_again_only_what_is_unpaid(
    client, sessions, task_queue
):
    h = await _household(client, sessions, task_queue, support_type="repair", programme="")
    commune, district = _officers(h)
    before = await _until(client, sessions, h, _paid)
    paid = sum(t.amount for t in before.tranches if t.status is TrancheStatus.PAID)
    assert 0 < paid < sum(t.amount for t in before.tranches)
    ask = {"kind": "support_type", "support_type": "new_build"}
    r = await _refused(client, sessions, h, Step.REQUEST_CHANGE, commune, **ask)
    assert r.rule == "ReasonMissing"
    r = await _refused(client, sessions, h, Step.REQUEST_CHANGE, commune, reason="x", kind="support_type")
    assert r.rule == "InvalidInput" and "support_type" in r.message
    r = await _refused(
        client, sessions, h, Step.REQUEST_CHANGE, commune, reason="x", kind="support_type", support_type="repair"
    )
    assert r.rule == "NoChange"
    asked = await _step(client, sessions, h, Step.REQUEST_CHANGE, commune, ["BB-KHAO-SAT"], "Khung hư hỏng", **ask)
    r = await _refused(client, sessions, h, Step.REQUEST_CHANGE, commune, reason="again", kind="withdraw")
    assert r.rule == "ChangePending"
    r = await _refused(client, sessions, h, Step.DECIDE_CHANGE, commune, change=asked.change)
    assert r.rule == "RoleNotAllowed"
    r = await _refused(client, sessions, h, Step.DECIDE_CHANGE, district, change=asked.change, approved=False)
    assert r.rule == "ReasonMissing"

    async with sessions() as s:
        new = await policy_db.entitlement(s, SupportType.NEW_BUILD, h.beneficiary_group, today())
    decided = await _step(client, sessions, h, Step.DECIDE_CHANGE, district, ["QĐ-ĐIỀU-CHỈNH"], change=asked.change)
    unpaid_before = sum(t.amount for t in before.tranches if t.status is not TrancheStatus.PAID)
    assert (decided.entitlement, decided.released, decided.reserved) == (new, unpaid_before, new - paid)
    r = await _refused(client, sessions, h, Step.DECIDE_CHANGE, district, change=asked.change)
    assert r.rule == "AlreadyDecided"

    # The recording activity run again for the same step (a worker lost after its commit) hands back what the
    # first run did, read from the ledger under the step's key: the workflow's tranches and money stay right.
    (trail,) = await trails_of(client, [h.code])
    first = next(t for t in trail.transitions if t.record.step is Step.DECIDE_CHANGE)
    again = await HouseholdActivities(sessions).record_transition(first.record)
    assert again.replayed
    assert (again.released, again.entitlement, again.amount) == (unpaid_before, new, new - paid)
    assert again.allocation == first.outcome.allocation

    after = await household_state(client, h.code)
    assert [t.amount for t in after.tranches if t.status is TrancheStatus.PAID] == [paid]  # never what was paid
    assert sum(t.amount for t in after.tranches) == new
    async with sessions() as s:
        row = (await s.execute(select(households).where(households.c.code == h.code))).one()
        pending = await s.scalar(
            select(ledger_accounts.c.credits_pending).where(ledger_accounts.c.code == f"HH:{h.code}")
        )
    assert (row.support_type, pending) == ("new_build", new - paid)
    report = verify(await trails_of(client, [h.code]), await read_records(sessions, [h.code]))
    assert report.discrepancies == []

    # The file closes paid exactly the new entitlement, and the three records still agree.
    await _until(
        client,
        sessions,
        h,
        lambda s: s.stage is Stage.SETTLEMENT and all(t.status is TrancheStatus.PAID for t in s.tranches),
    )
    await take_step(client, sessions, h.code, Step.SETTLE, sample.FINANCE_USERS[1], evidence=["QT"])
    await client.get_workflow_handle(h.workflow_id).result()
    async with sessions() as s:
        posted = await s.scalar(
            select(ledger_accounts.c.credits_posted).where(ledger_accounts.c.code == f"HH:{h.code}")
        )
    assert posted == new
    report = verify(await trails_of(client, [h.code]), await read_records(sessions, [h.code]))
    assert report.discrepancies == [] and report.amount_checked >= new


async def test_a_new_payee_waits_for_the_tranche_already_authorised(client, sessions, task_queue):
    h = await _household(client, sessions, task_queue, programme="")
    commune, district = _officers(h)
    await _until(client, sessions, h, lambda s: any(t.status is TrancheStatus.AUTHORISED for t in s.tranches))
    asked = await _step(
        client, sessions, h, Step.REQUEST_CHANGE, commune, ["UQ"], "Chủ hộ đi xa", kind="payee", payee="Lò Thị Hoa"
    )
    r = await _refused(client, sessions, h, Step.DECIDE_CHANGE, district, change=asked.change)
    assert r.rule == "PaymentInFlight"  # the instruction names the payee its authoriser approved


async def test_an_objection_is_resolved_by_neither_its_recorder_nor_a_role_that_may_not_cancel(
    client, sessions, task_queue
):
    h = await _household(client, sessions, task_queue)
    commune, district = _officers(h)
    await _step(client, sessions, h, Step.VERIFY, district, findings=FINDINGS.model_dump(mode="json"))
    posted = await _posted(client, sessions, h)
    raised = await _raised(client, sessions, h, posted)
    cancel = {"objection": raised.objection, "outcome": "upheld_cancel", "reason": "Có cơ sở"}
    r = await _refused(client, sessions, h, Step.RESOLVE_OBJECTION, commune, **cancel)
    assert r.rule == "SegregationOfDuties" and "recorded objection" in r.message
    # Another commune officer may dismiss it, but not take the household off the list: cancelling is the
    # district's or the province's.
    other = f"{commune}.2"
    async with sessions() as s, s.begin():
        user = await users_db.get(s, commune)
        row = {k: getattr(user, k) for k in ("full_name", "role", "agency", "province", "district", "commune")}
        await users_db.upsert(s, [row | {"user_id": other, "active": True}])
    r = await _refused(client, sessions, h, Step.RESOLVE_OBJECTION, other, **cancel)
    assert r.rule == "RoleNotAllowed" and "upheld_cancel" in r.message
    done = await _step(client, sessions, h, Step.RESOLVE_OBJECTION, sample.PROVINCE_USER, ["BB"], **cancel)
    assert done.to_stage is Stage.CANCELLED  # the district officer verified it: the province resolves


async def test_a_new_payee_is_paid_and_a_withdrawal_releases_what_was_not_paid(client, sessions, task_queue):
    moved, leaving = [await _household(client, sessions, task_queue, programme="") for _ in range(2)]
    for h in (moved, leaving):
        await _until(client, sessions, h, _paid)
    commune, district = _officers(moved)
    payee = "Hoàng Thị Lan (vợ chủ hộ)"
    asked = await _step(
        client,
        sessions,
        moved,
        Step.REQUEST_CHANGE,
        commune,
        ["GIAY-UY-QUYEN"],
        "Chủ hộ đi làm xa",
        kind="payee",
        payee=payee,
    )
    await _step(client, sessions, moved, Step.DECIDE_CHANGE, district, ["QĐ"], change=asked.change)
    assert (await household_state(client, moved.code)).payee == payee
    await _until(client, sessions, moved, lambda s: all(t.status is TrancheStatus.PAID for t in s.tranches))
    async with sessions() as s:
        payees = list(
            await s.scalars(
                select(payments.c.payee)
                .where(payments.c.household_code == moved.code)
                .order_by(payments.c.tranche, payments.c.attempt)
            )
        )
    assert payees[0] == moved.head_of_household and payees[-1] == payee

    commune, district = _officers(leaving)
    state = await household_state(client, leaving.code)
    paid = sum(t.amount for t in state.tranches if t.status is TrancheStatus.PAID)
    asked = await _step(
        client, sessions, leaving, Step.REQUEST_CHANGE, commune, ["DON-XIN-RUT"], "Hộ xin rút", kind="withdraw"
    )
    done = await _step(client, sessions, leaving, Step.DECIDE_CHANGE, district, ["QĐ"], change=asked.change)
    assert done.to_stage is Stage.CANCELLED
    async with sessions() as s:
        account = (
            await s.execute(
                select(ledger_accounts.c.credits_pending, ledger_accounts.c.credits_posted).where(
                    ledger_accounts.c.code == f"HH:{leaving.code}"
                )
            )
        ).one()
    assert tuple(account) == (0, paid)  # what was paid stays paid; the rest went back to its sources
    report = verify(await trails_of(client, [leaving.code]), await read_records(sessions, [leaving.code]))
    assert report.discrepancies == []


async def test_a_change_of_support_type_is_refused_when_a_source_would_pay_past_its_cap(
    client, sessions, owner_sessions, task_queue
):
    code = f"TEST-CAP-{uuid.uuid4().hex[:6].upper()}"
    async with owner_sessions() as s, s.begin():
        rules = {"max_per_house": {"new_build": 45_000_000}}
        await ledger.create_source(
            s, code=code, name="Nguồn có hạn mức", category="provincial_budget", is_state_budget=True, rules=rules
        )
    async with sessions() as s, s.begin():
        await ledger.receive(s, key=f"{code}:in", source=code, amount=1_000_000_000, memo="test")
    h = await _household(client, sessions, task_queue, support_type="repair", programme="")
    commune, district = _officers(h)
    await take_step(client, sessions, h.code, Step.VERIFY, commune, evidence=["BB"])
    await take_step(client, sessions, h.code, Step.APPROVE, district, evidence=["QĐ"])
    await take_step(client, sessions, h.code, Step.ALLOCATE, sample.FINANCE_USERS[0], evidence=["PB"], source=code)
    await _until(client, sessions, h, _paid)
    asked = await _step(
        client,
        sessions,
        h,
        Step.REQUEST_CHANGE,
        commune,
        ["BB"],
        "Khung hư hỏng",
        kind="support_type",
        support_type="new_build",
    )
    r = await _refused(client, sessions, h, Step.DECIDE_CHANGE, district, change=asked.change)
    assert r.rule == "SourceCapExceeded" and code in r.message and "45.000.000 đ" in r.message
