"""After the money: payment verification plans (sized, drawn reproducibly, risk households always in), their
answers, and the grievances that hold a settlement until someone else resolves them; on the real Temporal dev
server and PostgreSQL, refusals by the rule they name."""

from __future__ import annotations

import uuid
from datetime import timedelta

import openpyxl
import pytest
from sqlalchemy import select, text

from core.errors import Refusal
from db.schema import outbox
from finance.channel import HttpBank
from models.finance import TrancheStatus
from models.household import Stage, Step
from models.receipts import Answer, Channel, Outcome
from operations import actions, dossier, receipts, sample
from operations.actions import household_state
from operations.reconciliation import reconcile
from operations.sampling import draw, sample_size
from tests.conftest import FRONT_DOOR, default_bank, enroll, make_households, running_worker, take_step
from tests.test_review import _step, _until

FINANCE, SECOND_FINANCE = sample.FINANCE_USERS


@pytest.mark.parametrize(
    ("population", "confidence", "margin", "size"),
    [
        (6508, 0.95, 0.05, 545),  # Lạng Sơn's list, as UNICEF HOPE sizes it
        (1000, 0.95, 0.05, 417),
        (1000, 0.90, 0.05, 320),
        (50_000, 0.99, 0.03, 2667),
        (100, 0.95, 0.05, 100),  # more than the list: the whole list
        (0, 0.95, 0.05, 0),
    ],
)
def test_the_sample_size_follows_confidence_and_margin_times_one_and_a_half(population, confidence, margin, size):
    assert sample_size(population, confidence, margin) == size


def test_a_sample_size_outside_sensible_parameters_is_refused():
    for confidence, margin in ((0.5, 0.05), (1.0, 0.05), (0.95, 0.5), (0.95, 0.0)):
        with pytest.raises(ValueError):
            sample_size(100, confidence, margin)


def test_the_same_seed_draws_the_same_households_and_risk_households_are_always_drawn():
    codes = [f"H{i:04d}" for i in range(1000)]
    risks = {"H0007": "payee changed", "H0500": "payment failed"}
    first = draw(reversed(codes), risks, size_of_rest=40, seed=2026)
    again = draw(codes, risks, size_of_rest=40, seed=2026)
    other = draw(codes, risks, size_of_rest=40, seed=2027)
    assert first.reasons == again.reasons  # the order codes come in does not matter
    assert first.reasons != other.reasons
    for d in (first, other):
        assert (d.risk, d.sampled, len(d.reasons)) == (2, 40, 42)
        assert d.reasons["H0007"] == "payee changed" and d.reasons["H0500"] == "payment failed"
    full = draw(codes, risks, size_of_rest=None, seed=1)
    assert len(full.reasons) == 1000 and full.sampled == 998


@pytest.fixture
async def banked(client, sessions, settings):
    """A worker paying through a bank process this module holds too, to ask it for its statement."""
    bank = default_bank(settings)
    async with running_worker(client, sessions, settings, bank=bank) as tq:
        yield tq, bank


async def _paid_households(client, sessions, task_queue, n: int):
    decision = f"{uuid.uuid4().int % 10**6}/QĐ-UBND"
    one_commune = {"district": "Cao Lộc", "commune": "Hải Yến", "programme": "", "decision_ref": decision}
    items = await enroll(client, sessions, task_queue, make_households(n, **one_commune))
    for h in items:
        await _until(client, sessions, h, lambda s: any(t.status is TrancheStatus.PAID for t in s.tranches))
    return decision, items


async def test_a_not_received_answer_opens_a_grievance_that_holds_the_settlement_until_another_person_resolves_it(
    client, sessions, owner_sessions, banked, tmp_path
):
    task_queue, bank = banked
    decision, (changed, unpaid, fine) = await _paid_households(client, sessions, task_queue, 3)
    commune, district = sample.officers_of(changed.district, changed.commune)
    asked = await _step(
        client, sessions, changed, Step.REQUEST_CHANGE, commune, ["UQ"], "Chủ hộ đi xa", kind="payee", payee="Lò Văn Ba"
    )
    await _step(client, sessions, changed, Step.DECIDE_CHANGE, district, ["QĐ"], change=asked.change)

    with pytest.raises(Refusal) as r:
        await receipts.create_plan(sessions, commune, "Xác minh", decision_ref=decision)
    assert r.value.rule == "RoleNotAllowed"
    with pytest.raises(Refusal) as r:
        await receipts.create_plan(sessions, FINANCE, "Xác minh", decision_ref="0/QĐ-KHONG-CO")
    assert r.value.rule == "NothingPaid"
    plan = await receipts.create_plan(
        sessions, FINANCE, "Xác minh đợt 1", decision_ref=decision, confidence=0.8, margin=0.2, seed=7
    )
    assert (plan.population, plan.risk, plan.asked) == (3, 1, 3)
    report = await receipts.plan_report(sessions, FINANCE, plan.id)
    reasons = {line.household_code: line.reason for line in report.lines}
    assert reasons[changed.code] == "payee changed" and reasons[fine.code] == "sampled"
    assert not report.finished
    assert await receipts.redraw(sessions, plan.id)  # its stored population, risks and seed draw it again

    # Answers: by the household's commune officer (or Finance); the first answer stands.
    with pytest.raises(Refusal) as r:
        await receipts.record_answer(
            sessions, sample.district_user("Lộc Bình"), plan.id, unpaid.code, Answer.NOT_RECEIVED, Channel.PHONE
        )
    assert r.value.rule == "OutsideJurisdiction"
    with pytest.raises(Refusal) as r:
        await receipts.record_answer(sessions, FINANCE, plan.id, "KHONG-CO-00001", Answer.RECEIVED_FULL, Channel.PHONE)
    assert r.value.rule in ("NotInPlan", "UnknownHousehold")
    said = await receipts.record_answer(
        sessions, commune, plan.id, unpaid.code, Answer.NOT_RECEIVED, Channel.VISIT, amount=0, note="Chưa nhận đợt 1"
    )
    assert said.new and said.grievance is not None
    again = await receipts.record_answer(sessions, commune, plan.id, unpaid.code, Answer.RECEIVED_FULL, Channel.PHONE)
    assert (again.new, again.answer, again.grievance) == (False, Answer.NOT_RECEIVED, said.grievance)
    for h in (changed, fine):
        done = await receipts.record_answer(sessions, commune, plan.id, h.code, Answer.RECEIVED_FULL, Channel.PHONE)
        assert done.grievance is None
    report = await receipts.plan_report(sessions, FINANCE, plan.id)
    assert report.finished and report.counts() == {"received_full": 2, "received_issues": 0, "not_received": 1}
    sheet = receipts.write_xlsx(report, tmp_path / "ke-hoach.xlsx")
    rows = list(openpyxl.load_workbook(sheet).active.iter_rows(values_only=True))
    assert ("Đã trả lời", "3/3") in [r[:2] for r in rows]
    assert any(r[0] == unpaid.code and r[6] == "not_received" for r in rows)

    # The grievance holds the settlement; the payment's releaser and its filer may not resolve it.
    (line,) = [g for g in await receipts.grievances(sessions, FINANCE, open_only=True) if g.id == said.grievance]
    assert (line.category, line.responsible, line.opened_by) == ("payment_not_received", sample.TREASURY_USER, commune)
    await _until(
        client,
        sessions,
        unpaid,
        lambda s: s.stage is Stage.SETTLEMENT and all(t.status is TrancheStatus.PAID for t in s.tranches),
    )
    with pytest.raises(Refusal) as r:
        await take_step(client, sessions, unpaid.code, Step.SETTLE, SECOND_FINANCE, evidence=["QT"])
    assert r.value.rule == "GrievanceOpen" and str(said.grievance) in r.value.message
    assert (await household_state(client, unpaid.code)).stage is Stage.SETTLEMENT
    for who in (sample.TREASURY_USER, commune):
        with pytest.raises(Refusal) as r:
            await receipts.resolve_grievance(sessions, who, said.grievance, Outcome.RESOLVED, "Đã nhận")
        assert r.value.rule == "SegregationOfDuties"
    # PostgreSQL holds the rule too: the releaser's resolution written past the application is refused.
    async with owner_sessions() as s:
        with pytest.raises(Exception, match="may not resolve"):
            await s.execute(
                text(
                    "INSERT INTO grievance_resolutions (grievance_id, outcome, resolution, resolved_by) "
                    "VALUES (:g, 'resolved', 'x', :u)"
                ),
                {"g": said.grievance, "u": sample.TREASURY_USER},
            )
    with pytest.raises(Refusal) as r:  # a trace asks the channel; without one there is nothing to rest on
        await receipts.resolve_grievance(sessions, FINANCE, said.grievance, Outcome.TRACE_PAYMENT, "Tra soát")
    assert r.value.rule == "ChannelRequired"
    async with HttpBank(bank.url, secret=bank.secret) as channel:
        await receipts.resolve_grievance(
            sessions, FINANCE, said.grievance, Outcome.TRACE_PAYMENT, "Tra soát với kênh", channel=channel
        )
    (traced,) = [g for g in await receipts.grievances(sessions, FINANCE) if g.id == said.grievance]
    assert traced.outcome == "trace_payment" and f"{unpaid.code}-A" in traced.resolution
    assert "confirmed" in traced.resolution  # the channel's own statement, kept with the resolution
    with pytest.raises(Refusal) as r:
        await receipts.resolve_grievance(sessions, FINANCE, said.grievance, Outcome.RESOLVED, "again")
    assert r.value.rule == "AlreadyResolved"
    done = await take_step(client, sessions, unpaid.code, Step.SETTLE, SECOND_FINANCE, evidence=["QT"])
    assert done.to_stage is Stage.CLOSED


async def test_an_officer_files_a_grievance_for_a_person_and_a_construction_one_does_not_hold_the_money(
    client, sessions, task_queue
):
    _, (h,) = await _paid_households(client, sessions, task_queue, 1)
    commune, district = sample.officers_of(h.district, h.commune)
    with pytest.raises(Refusal) as r:
        await receipts.file_grievance(sessions, commune, h.code, "construction", "Thợ làm chậm")
    assert r.value.rule == "ResponsibleMissing"  # not a payment: the officer it is about is named
    g = await receipts.file_grievance(
        sessions, commune, h.code, "construction", "Thợ làm chậm", said_by="Chủ hộ", responsible=district
    )
    again = await receipts.file_grievance(
        sessions, commune, h.code, "construction", "Thợ làm chậm", said_by="Chủ hộ", responsible=district
    )
    assert again == g  # the same filing sent twice is one grievance
    with pytest.raises(Refusal) as r:
        await receipts.file_grievance(sessions, commune, h.code, "payment_issue", "Phí", responsible=district)
    assert r.value.rule == "ResponsibleFixed"  # a payment grievance is about the payment's releaser
    lines = [x for x in await receipts.grievances(sessions, district) if x.id == g]
    assert lines and lines[0].outcome is None and not receipts.overdue(lines[0])
    paid_up = await _until(
        client,
        sessions,
        h,
        lambda s: s.stage is Stage.SETTLEMENT and all(t.status is TrancheStatus.PAID for t in s.tranches),
    )
    assert paid_up.stage is Stage.SETTLEMENT
    done = await take_step(client, sessions, h.code, Step.SETTLE, SECOND_FINANCE, evidence=["QT"])
    assert done.to_stage is Stage.CLOSED  # a construction grievance does not hold the settlement


async def _reconciled(sessions):
    async with sessions() as s:
        return await reconcile(s)


async def test_the_settlement_dossier_equals_the_reconciliation_to_the_dong(client, sessions, task_queue, tmp_path):
    _, (h,) = await _paid_households(client, sessions, task_queue, 1)
    with pytest.raises(Refusal) as r:
        await dossier.build(sessions, sample.commune_user(h.district, h.commune))
    assert r.value.rule == "RoleNotAllowed"
    with pytest.raises(Refusal) as r:
        await dossier.build(sessions, FINANCE, source="KHONG-CO")
    assert r.value.rule == "UnknownFundingSource"
    for source in (None, "NS-TINH"):
        d = await dossier.build(sessions, sample.AUDITOR_USER, source=source, verified="0 discrepancies")
        assert d.compared and d.matches, (source, d.expected, d.paid, d.pending)
        assert d.paid > 0
    # A commune as the reconciliation names it (here the old map's, with its district): the same line.
    key = next(c.key for c in (await _reconciled(sessions)).communes if c.key.startswith(f"{h.commune} ("))
    local = await dossier.build(sessions, FINANCE, commune=key)
    assert local.compared and local.matches and 0 < local.paid <= d.paid
    narrow = await dossier.build(sessions, FINANCE, commune=key, source="NS-TINH")
    assert not narrow.compared and not narrow.matches  # no reconciliation line: never called a match
    summary = dict(r[:2] for r in narrow.sheets[0][2])
    assert "chưa so sánh" in summary["Khớp đối chiếu"]
    path = dossier.write_xlsx(d, tmp_path / "quyet-toan.xlsx")
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == [name for name, _, _ in d.sheets]
    summary = dict(r[:2] for r in book["Tổng hợp"].iter_rows(min_row=2, values_only=True))
    assert summary["Đã chi (đ)"] == d.paid and summary["Khớp đối chiếu"] == "khớp đến từng đồng"
    payments = list(book["Chi trả"].iter_rows(min_row=2, values_only=True))
    assert any(p[1] == h.code and p[6] == "confirmed" and p[7] for p in payments)  # with the bank's reference
    assert len(dossier.write_csv(d, tmp_path / "csv")) == len(d.sheets)


async def test_a_grievance_near_its_due_date_reminds_its_officer_and_one_overdue_goes_to_finance_once(
    client, sessions, task_queue
):
    _, (h,) = await _paid_households(client, sessions, task_queue, 1)
    commune, district = sample.officers_of(h.district, h.commune)
    g = await receipts.file_grievance(sessions, commune, h.code, "payment_issue", "Phải trả phí nhận tiền")
    (line,) = [x for x in await receipts.grievances(sessions, FINANCE) if x.id == g]

    async def kinds() -> list[str]:
        async with sessions() as s:
            rows = await s.execute(
                select(outbox.c.kind, outbox.c.recipient).where(outbox.c.idempotency_key.like(f"grievance:{g}:%"))
            )
            return sorted(f"{k}>{r}" for k, r in rows)

    early = line.due_on - timedelta(days=10)
    await receipts.remind(sessions, on=early)
    assert await kinds() == []
    await receipts.remind(sessions, on=line.due_on - timedelta(days=1))
    assert await kinds() == ["grievance_reminder>Sở Tài chính"]  # who resolves it, not the releaser
    late = line.due_on + timedelta(days=1)
    await receipts.remind(sessions, on=late)
    await receipts.remind(sessions, on=late)  # once each
    assert await kinds() == ["grievance_overdue>UBND tỉnh, Sở Tài chính", "grievance_reminder>Sở Tài chính"]
    assert receipts.overdue(line, on=late)


async def test_acceptance_records_both_minutes_and_the_dossier_lists_them(client, sessions, task_queue):
    _, (h,) = await _paid_households(client, sessions, task_queue, 1)
    _, district = sample.officers_of(h.district, h.commune)
    await _until(client, sessions, h, lambda s: s.stage is Stage.ACCEPTANCE)

    async def accept(*evidence: str):
        return await actions.take_step(
            client, sessions, h.code, Step.ACCEPT, district, evidence=list(evidence), signer=FRONT_DOOR
        )

    with pytest.raises(Refusal) as r:
        await accept("BB-NT/01")
    assert r.value.rule == "MinutesMissing" and "Điều 75" in r.value.message
    with pytest.raises(Refusal) as r:
        await accept("BB-NT/01", "BB-NT/01")  # the same document twice is one
    assert r.value.rule == "MinutesMissing"
    assert (await accept("BB-NT/01", "BB-SD/01")).to_stage is Stage.SETTLEMENT
    d = await dossier.build(sessions, FINANCE)
    (row,) = [x for x in dict((n, rows) for n, _, rows in d.sheets)["Nghiệm thu"] if x[0] == h.code]
    assert row[1] and row[3] == "BB-NT/01; BB-SD/01"
