"""Drive imported households through the whole programme as the officers responsible for each step would:
verification, approval, allocation by the allocation policy, construction with its progress report,
payment of each tranche (authorised by Finance, released by the treasury, confirmed by the payment
channel), acceptance and settlement.

The demo (`starter.py demo`) is these parts in order; the command line only shows them: the lists loaded
(`load`), the refusals the rules give (`refusals`), the rounds of steps and payout batches (`rounds`), cấp bù
and co-financing (`finance_extras`), work left for the web app (`web_work`), passwords to sign in with
(`logins`); the checks it ends with are operations/checks.py."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol

from temporalio.client import Client

from core.errors import Refusal
from core.formatting import day, dong, local
from core.signing import SigningRing
from db import households, users
from db.engine import Sessions
from db.ledger import Transfer
from finance.channel import PaymentChannel
from models.actions import ActionResult
from models.finance import (
    REPORTED_MILESTONES,
    BatchAction,
    BatchProgress,
    BatchSelection,
    PayoutBatchResult,
    TrancheStatus,
)
from models.household import Household, Stage, Step
from models.receipts import Answer, Channel, Outcome
from models.reorganisation import ReorganiseResult
from models.state import HouseholdState
from operations import accounts, dossier, finance_ops, receipts, reform, registry, sample
from operations.actions import household_state, take_step
from operations.imports import ImportReport, import_file
from operations.payouts import payment_counts, start_batch, tranche_counts, wait_for_payments
from operations.seed import seed_demo

Action = tuple[Step, str, dict]  # step, user, keyword arguments for take_step


def next_action(state: HouseholdState, h: Household, *, payouts: bool = True) -> Action | str | None:
    """The next thing an officer does on this household: an action, "wait" (for the payment channel),
    "payout" (a tranche waits for Finance or the treasury and `payouts` is off), or None (closed). Under a
    policy with a posting period, a household waiting for approval is posted first (sample.posting_for)."""
    commune, district = sample.officers_of(h.district, h.commune)
    first_finance, second_finance = sample.FINANCE_USERS
    stage = state.stage
    if stage.terminal:
        return None
    payout_by = {
        TrancheStatus.DUE: (Step.AUTHORISE_PAYOUT, first_finance, "QD-DUYET-CHI"),
        TrancheStatus.AUTHORISED: (Step.RELEASE_PAYOUT, sample.TREASURY_USER, "UNC"),
    }
    for t in state.tranches:
        if t.status in payout_by:
            if not payouts:
                return "payout"
            step, user, doc = payout_by[t.status]
            return step, user, {"tranche": t.n, "evidence": [f"{doc}/{h.code}/{t.n}"]}
    if stage is Stage.CONSTRUCTION:
        planned = [
            t for t in state.tranches if t.status is TrancheStatus.PLANNED and t.milestone in REPORTED_MILESTONES
        ]
        if planned:
            return (
                Step.REPORT_PROGRESS,
                commune,
                {"milestone": planned[0].milestone.value, "evidence": [f"BB-TIEN-DO/{h.code}"]},
            )
        if any(t.status is TrancheStatus.RELEASED for t in state.tranches):
            return "wait"
    if stage is Stage.SETTLEMENT and any(t.status is not TrancheStatus.PAID for t in state.tranches):
        return "wait"
    if stage is Stage.APPROVAL and state.posting_days is not None and state.posting is None:
        posted = local(state.stage_since).date() - timedelta(days=sample.POSTED_DAYS_AGO)
        details = sample.posting_for(h, posted)
        return Step.POST_LIST, commune, {"evidence": [f"TB-NIEM-YET/{h.code}"], "details": details}
    return {
        Stage.VERIFICATION: (
            Step.VERIFY,
            commune,
            {"evidence": [f"BB-BINH-XET/{h.code}"], "details": {"findings": sample.findings_for(h)}},
        ),
        Stage.APPROVAL: (Step.APPROVE, district, {"evidence": [h.decision_ref]}),
        Stage.FUND_ALLOCATION: (Step.ALLOCATE, first_finance, {"evidence": [f"QD-PHAN-BO/{h.code}"]}),
        Stage.CONSTRUCTION: (Step.COMPLETE_CONSTRUCTION, commune, {"evidence": [f"BC-HOAN-THANH/{h.code}"]}),
        Stage.ACCEPTANCE: (
            Step.ACCEPT,
            district,
            {"evidence": [f"BB-NGHIEM-THU/{h.code}", f"BB-DUA-VAO-SU-DUNG/{h.code}"]},
        ),
        Stage.SETTLEMENT: (Step.SETTLE, second_finance, {"evidence": [f"QUYET-TOAN/{h.code}"]}),
    }[stage]


@dataclass
class DriveResult:
    closed: int = 0
    already_closed: int = 0
    steps: int = 0
    failures: dict[str, str] = field(default_factory=dict)


async def drive_one(
    client: Client,
    sessions: Sessions,
    h: Household,
    *,
    signer: SigningRing,
    payouts: bool = True,
    wait_timeout: float = 60.0,
) -> int:
    """Take every remaining step on one household (with `payouts` off, stop where a tranche waits for
    Finance or the treasury), each signed with the demo's front-door ring (`signer`) as the officer whose
    turn it is. Returns the number of steps taken."""
    async with sessions() as session:
        row = await households.get(session, h.code)
    if row is not None and Stage(row.stage).terminal:
        return 0  # the read model is written in the same transaction as the closing step
    taken = 0
    waited = 0.0
    while True:
        state = await household_state(client, h.code)
        action = next_action(state, h, payouts=payouts)
        if action is None or action == "payout":
            return taken
        if action == "wait":
            if waited > wait_timeout:
                raise Refusal("PaymentNotConfirmed", f"household {h.code}: the payment channel has not answered")
            await asyncio.sleep(0.1)
            waited += 0.1
            continue
        step, user, kwargs = action
        result = await take_step(client, sessions, h.code, step, user, signer=signer, **kwargs)
        taken += 1
        if isinstance(result, ActionResult) and result.to_stage.terminal:
            return taken  # a closed workflow answers queries only by replaying its history: do not ask


async def drive_all(
    client: Client,
    sessions: Sessions,
    items: list[Household],
    *,
    signer: SigningRing,
    concurrency: int = 16,
    payouts: bool = True,
    on_done: Callable[[str], None] | None = None,
) -> DriveResult:
    result = DriveResult()
    gate = asyncio.Semaphore(concurrency)

    async def one(h: Household) -> None:
        async with gate:
            try:
                taken = await drive_one(client, sessions, h, signer=signer, payouts=payouts)
                result.steps += taken
                async with sessions() as session:
                    row = await households.get(session, h.code)
                if row is not None and Stage(row.stage).terminal:
                    if taken:
                        result.closed += 1
                    else:
                        result.already_closed += 1
            except Refusal as refusal:
                result.failures[h.code] = str(refusal)
            finally:
                if on_done:
                    on_done(h.code)

    await asyncio.gather(*(one(h) for h in items))
    return result


# ------------------------------------------------------------------------------------------- the lists

PROVINCES = ("lang-son",)  # the provinces bench/province.py generates


def province_files(state_dir: Path, name: str) -> tuple[Path, int]:
    """Write a generated province's lists into the state folder; return the main list and the support its
    households are entitled to (the budget the demo gives the province)."""
    from bench.province import SUPPORT, lang_son, write  # the generator lives with the benchmarks

    if name not in PROVINCES:
        raise ValueError(f"province {name!r}: this build generates {', '.join(PROVINCES)}")
    where = state_dir / f"province-{name}"
    where.mkdir(parents=True, exist_ok=True)
    generated = lang_son()
    write(generated, where)
    return where / "households.csv", sum(SUPPORT[r["support_type"]] for r in generated.all)


@dataclass
class Loaded:
    """What `load` did: the reference data seeded, the province's budget received (a generated province),
    each list imported with its report, and the households now in the programme."""

    seeded: dict[str, int]
    budget: Transfer | None
    imports: list[tuple[str, ImportReport]]
    items: list[Household]


async def load(
    sessions: Sessions,
    client: Client,
    task_queue: str,
    households_csv: Path,
    *,
    budget: int | None = None,
    province: str | None = None,
    match_key: bytes | None = None,
) -> Loaded:
    """The demo officers, sources and receipts; a generated province's whole budget; the approved list, and
    beside it a supplementary list (households_supplementary.xlsx, or .csv), registered as the decision amending
    it."""
    seeded = await seed_demo(sessions)
    received = None
    if budget:
        ref = f"Giao dự toán hỗ trợ nhà ở 2025 toàn tỉnh ({province})"
        received, _ = await finance_ops.receive(
            sessions, sample.FINANCE_USERS[1], source="NS-TINH", amount=budget, ref=ref
        )
    imports = [
        (
            households_csv.name,
            await import_file(sessions, client, task_queue, households_csv, "tinh.luong", match_key=match_key),
        )
    ]
    extra = next(
        (f for ext in (".xlsx", ".csv") if (f := households_csv.with_name(f"households_supplementary{ext}")).exists()),
        households_csv.with_name("households_supplementary.csv"),
    )
    if extra.exists():  # a supplementary decision amends the approved list (a workbook, as agencies send it)
        await finance_ops.add_decision(
            sessions,
            sample.PROVINCE_USER,
            sample.SUPPLEMENTARY_DECISION,
            supplements=sample.DECISION,
            decided_on=date(2025, 6, 30),
            note="Danh sách bổ sung",
        )
        more = await import_file(sessions, client, task_queue, extra, "tinh.luong", match_key=match_key)
        imports.append((f"{extra.name} ({sample.SUPPLEMENTARY_DECISION}, supplements {sample.DECISION})", more))
    codes = [code for _, report in imports for code in report.codes]
    async with sessions() as session:
        items = [h for code in codes if (h := await households.get_household(session, code))]
    return Loaded(seeded, received, imports, items)


async def refusals(
    client: Client, sessions: Sessions, h: Household, *, signer: SigningRing
) -> list[tuple[Step, str, Refusal]]:
    """Steps the rules do not allow on a household just imported, tried: settling before anything (out of
    order) and verifying as a finance officer (not their role). Each with the refusal it got."""
    refused = []
    for step, user in ((Step.SETTLE, "tc.nong"), (Step.VERIFY, "tc.hoang")):
        try:
            await take_step(client, sessions, h.code, step, user, evidence=["DEMO"], signer=signer)
        except Refusal as r:
            refused.append((step, user, r))
    return refused


# ------------------------------------------------------------------------------------------- before the money

OTHER_PROGRAMME = "CT-135"  # a programme that supported households before; its list is matched by keyed hash


@dataclass
class BeforeTheMoney:
    """What happened to three households before their money (operations/demo.before_the_money), as lines."""

    lines: list[str] = field(default_factory=list)


async def drive_until(
    client: Client, sessions: Sessions, h: Household, done: Callable[[HouseholdState], bool], *, signer: SigningRing
) -> HouseholdState:
    """Take the household's steps (as `drive_one` does) until `done` holds of its state."""
    waited = 0.0
    while not done(state := await household_state(client, h.code)):
        action = next_action(state, h)
        if action is None or action == "payout":
            raise Refusal("DemoStuck", f"household {h.code} closed or waits for a payout before reaching the point")
        if action == "wait":
            if waited > 60:
                raise Refusal("PaymentNotConfirmed", f"household {h.code}: the payment channel has not answered")
            await asyncio.sleep(0.1)
            waited += 0.1
            continue
        step, user, kwargs = action
        await take_step(client, sessions, h.code, step, user, signer=signer, **kwargs)
    return state


async def _refused(coro) -> Refusal:
    try:
        await coro
    except Refusal as r:
        return r
    raise Refusal("DemoExpectedRefusal", "the engine took a step the demo expected it to refuse")


async def before_the_money(
    client: Client,
    sessions: Sessions,
    owner: Sessions,
    items: list[Household],
    state_dir: Path,
    *,
    key: bytes,
    signer: SigningRing,
) -> BeforeTheMoney:
    """Three households of the list before their money, under the policy's review rules: the first posted with
    an objection raised, which blocks its approval until another officer dismisses it; the second on another
    programme's list (CT-135's, imported as a workbook of CCCD, matched by keyed hash), which blocks its approval
    until the province records why it is not double support; the third, a repair whose first tranche is paid,
    switched to a new build by a change the commune asks for and the district approves (the entitlement from
    the policy table, the unpaid tranches re-reserved). Each is left where the rounds finish it."""
    out = BeforeTheMoney()
    a, b = items[0], items[1]
    c = next((h for h in items[2:] if h.support_type.value == "repair"), None)

    def step(h: Household, s: Step, user: str, evidence: list[str], **kw):
        return take_step(client, sessions, h.code, s, user, evidence=evidence, signer=signer, **kw)

    # 1. An objection raised while the list was posted.
    commune, district = sample.officers_of(a.district, a.commune)
    state = await drive_until(
        client, sessions, a, lambda s: s.stage is Stage.APPROVAL and s.posting is not None, signer=signer
    )
    posting = state.posting
    raised = await step(
        a,
        Step.RECORD_OBJECTION,
        commune,
        [f"DON-PHAN-ANH/{a.code}"],
        details={
            "objector": "Bà Hoàng Thị Mai, thôn Bản Chu",
            "about": "Hộ đã có nhà kiên cố ở thôn bên cạnh",
            "raised_on": (posting.posted_on + timedelta(days=2)).isoformat(),
        },
    )
    out.lines.append(
        f"{a.code}: posted at {posting.place} on {day(posting.posted_on)} (approval from {day(posting.period_ends)}); "
        f"objection #{raised.objection} recorded by {commune}"
    )
    r = await _refused(step(a, Step.APPROVE, district, [a.decision_ref]))
    out.lines.append(f"{a.code}: approve as {district} → {r.rule}: {r.message}")
    dismissed = await step(
        a,
        Step.RESOLVE_OBJECTION,
        district,
        [f"BB-XAC-MINH/{a.code}"],
        reason="Tổ công tác xác minh: nhà ở thôn bên cạnh là của con trai đã tách hộ; ý kiến không có cơ sở",
        details={"objection": raised.objection, "outcome": "dismissed"},
    )
    out.lines.append(
        f"{a.code}: objection #{dismissed.objection} {dismissed.outcome.value} by {district} (not the verifier); "
        "approval may follow"
    )

    # 2. Another programme's list names a household of ours.
    lists = state_dir / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    workbook = lists / "ct135-ho-tro-nha-o-2019.xlsx"
    workbook.write_bytes(_other_programme_xlsx([b.cccd, "020188000001", "020188000002"]))
    imported = await registry.import_list(
        owner,
        workbook.read_bytes(),
        workbook.name,
        programme=OTHER_PROGRAMME,
        user_id=sample.FINANCE_USERS[0],
        key=key,
        name="Danh sách hỗ trợ nhà ở CT-135 năm 2019",
    )
    out.lines.append(imported.describe(workbook.name))
    commune, district = sample.officers_of(b.district, b.commune)
    await drive_until(client, sessions, b, lambda s: s.stage is Stage.APPROVAL and s.posting is not None, signer=signer)
    r = await _refused(step(b, Step.APPROVE, district, [b.decision_ref]))
    out.lines.append(f"{b.code}: approve as {district} → {r.rule}: {r.message}")
    await step(
        b,
        Step.OVERRIDE_DOUBLE_SUPPORT,
        sample.PROVINCE_USER,
        [f"CV-XAC-MINH-CT135/{b.code}"],
        reason="CT-135 năm 2019 hỗ trợ công trình nước sạch của hộ, không hỗ trợ nhà ở: không trùng hỗ trợ",
        details={"programme": OTHER_PROGRAMME},
    )
    out.lines.append(
        f"{b.code}: match with {OTHER_PROGRAMME} overridden by {sample.PROVINCE_USER}, reason and evidence on record"
    )

    # 3. A repair found to need a new build, after its first tranche was paid.
    if c is None:
        return out
    commune, district = sample.officers_of(c.district, c.commune)
    paid = await drive_until(
        client,
        sessions,
        c,
        lambda s: any(t.status is TrancheStatus.PAID for t in s.tranches),
        signer=signer,
    )
    asked = await step(
        c,
        Step.REQUEST_CHANGE,
        commune,
        [f"BB-KHAO-SAT-LAI/{c.code}"],
        reason="Khảo sát lại: khung, tường hư hỏng nặng, không sửa chữa được; đề nghị chuyển sang xây mới",
        details={"kind": "support_type", "support_type": "new_build"},
    )
    r = await _refused(step(c, Step.DECIDE_CHANGE, commune, ["-"], details={"change": asked.change}))
    out.lines.append(f"{c.code}: change #{asked.change} decided by its requester {commune} → {r.rule}: {r.message}")
    decided = await step(c, Step.DECIDE_CHANGE, district, [f"QD-DIEU-CHINH/{c.code}"], details={"change": asked.change})
    before = sum(t.amount for t in paid.tranches)
    paid_so_far = sum(t.amount for t in paid.tranches if t.status is TrancheStatus.PAID)
    out.lines.append(
        f"{c.code}: repair → new build approved by {district}: entitlement {dong(before)} → "
        f"{dong(decided.entitlement or 0)}; the unpaid tranches released {dong(decided.released)} and reserved "
        f"{dong(decided.reserved)} again; the {dong(paid_so_far)} paid untouched"
    )
    return out


# ------------------------------------------------------------------------------------------- after the money


@dataclass
class AfterTheMoney:
    """What Finance did once the money was paid (operations/demo.after_the_money), as lines, and the files."""

    lines: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    matches: bool = False


async def after_the_money(
    sessions: Sessions,
    items: list[Household],
    state_dir: Path,
    *,
    channel: PaymentChannel,
    verified: str,
    checkpoint: str,
) -> AfterTheMoney:
    """A payment verification plan over every paid household (95 %, ±10 %, the risk households always in),
    each drawn household asked by its commune officer, one of them answering "not received"; the grievance it
    opens resolved by Finance (the channel's statement traced, not paid again); then the province's settlement
    dossier, whose totals must equal the reconciliation."""
    out = AfterTheMoney()
    finance, other_finance = sample.FINANCE_USERS
    plan = await receipts.create_plan(
        sessions, finance, "Xác minh nhận tiền hỗ trợ nhà ở 2025", confidence=0.95, margin=0.10, seed=20250701
    )
    out.lines.append(plan.describe())
    report = await receipts.plan_report(sessions, finance, plan.id)
    by_code = {h.code: h for h in items}
    not_received = next((line for line in report.lines if line.reason == "sampled"), report.lines[0])
    for line in report.lines:
        h = by_code.get(line.household_code)
        commune = sample.officers_of(h.district, h.commune)[0] if h else finance
        if line is not_received:
            said = await receipts.record_answer(
                sessions,
                commune,
                plan.id,
                line.household_code,
                Answer.NOT_RECEIVED,
                Channel.VISIT,
                amount=0,
                note="Hộ nói chưa nhận được đợt 2",
            )
            out.lines.append(
                f"{line.household_code}: not received (asked by {commune}, visit) → grievance {said.grievance} opened "
                "about the payment's releaser"
            )
        else:
            await receipts.record_answer(
                sessions, commune, plan.id, line.household_code, Answer.RECEIVED_FULL, Channel.PHONE
            )
    report = await receipts.plan_report(sessions, finance, plan.id)
    counts = report.counts()
    out.lines.append(
        f"plan {plan.id}: {report.answered}/{len(report.lines)} answered, "
        f"{'finished' if report.finished else 'not finished'} ({counts['received_full']} received in full, "
        f"{counts['not_received']} not received)"
    )
    out.files.append(receipts.write_xlsx(report, state_dir / "reports" / f"xac-minh-{plan.id}.xlsx"))
    await receipts.resolve_grievance(
        sessions,
        other_finance,
        said.grievance,
        Outcome.TRACE_PAYMENT,
        "Tra soát với kênh thanh toán; hộ xác nhận đã nhận sau khi kiểm tra tài khoản",
        evidence=[f"BB-LAM-VIEC/{not_received.household_code}"],
        channel=channel,
    )
    (resolved,) = [g for g in await receipts.grievances(sessions, finance) if g.id == said.grievance]
    out.lines.append(f"grievance {said.grievance} {resolved.outcome} by {other_finance}: {resolved.resolution}")
    d = await dossier.build(sessions, finance, verified=verified, checkpoint=checkpoint)
    out.matches = d.matches
    out.files.append(dossier.write_xlsx(d, state_dir / "reports" / "ho-so-quyet-toan-tinh.xlsx"))
    expected = ", ".join(f"{k} {dong(v)}" for k, v in d.expected.items())
    out.lines.append(
        f"settlement dossier ({d.scope}, every source): paid {dong(d.paid)}, still reserved {dong(d.pending)}, "
        f"released back {dong(d.released)}; reconciliation: {expected} → "
        + ("equal to the đồng" if d.matches else "DIFFERENT")
    )
    return out


def _other_programme_xlsx(cccds: list[str]) -> bytes:
    """Another programme's list as it would send it: its beneficiaries' CCCD, the year supported, a note."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["Số CCCD", "Năm hỗ trợ", "Ghi chú"])
    for cccd in cccds:
        ws.append([cccd, 2019, "Hỗ trợ theo Chương trình 135"])
        ws.cell(row=ws.max_row, column=1).number_format = "@"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- the rounds

# A payout batch covers one decision, split by district when the decision's list is longer than this: what
# one Finance officer authorises at a time, and a batch workflow's history stays small.
BATCH_SPLIT = 500
ROUNDS = 7  # officers' steps, then payout batches, then the channel's answers: every file is closed by then


def batch_selections(items: list[Household]) -> list[BatchSelection]:
    """One payout batch per decision; a decision longer than BATCH_SPLIT, one per district, and the households
    moved to the two-tier map (no district) by lists of at most BATCH_SPLIT codes."""
    per_decision = Counter(h.decision_ref for h in items)
    out = []
    for d in sorted(per_decision):
        if per_decision[d] <= BATCH_SPLIT:
            out.append(BatchSelection(decision_ref=d))
            continue
        mine = [h for h in items if h.decision_ref == d]
        out += [BatchSelection(decision_ref=d, district=x) for x in sorted({h.district for h in mine if h.district})]
        moved = sorted(h.code for h in mine if h.district is None)
        out += [
            BatchSelection(decision_ref=d, codes=moved[i : i + BATCH_SPLIT]) for i in range(0, len(moved), BATCH_SPLIT)
        ]
    return out


def in_selection(h: Household, selection: BatchSelection) -> bool:
    return (
        (selection.decision_ref is None or h.decision_ref == selection.decision_ref)
        and (selection.district is None or h.district == selection.district)
        and (not selection.codes or h.code in selection.codes)
    )


class RoundsView(Protocol):
    """How the rounds are shown while they run (the command line's progress bars and lines)."""

    def officers(self, round_no: int, households: int) -> AbstractContextManager[Callable[[str], None]]:
        """While the officers take their steps: called with each household's code when it is done."""
        ...

    def stepped(self, round_no: int, result: DriveResult) -> None: ...

    def batch(
        self, action: BatchAction, tranche: int, selection: BatchSelection
    ) -> AbstractContextManager[Callable[[BatchProgress], None]]:
        """While one payout batch runs: called with its progress."""
        ...

    def batched(self, result: PayoutBatchResult) -> None: ...

    def answered(self, payments: dict[str, int], unanswered: int) -> None:
        """The payment channel's answers so far, by status, and the released payments it has not answered."""
        ...


async def rounds(
    client: Client,
    sessions: Sessions,
    task_queue: str,
    items: list[Household],
    *,
    signer: SigningRing,
    concurrency: int,
    view: RoundsView,
    first_round: int = 1,
    last_round: int = ROUNDS,
    label: str = "demo",
) -> dict[str, str]:
    """Officers take every step they can; then Finance authorises and the treasury releases each due tranche
    in one batch per decision (`batch_selections`); the payment channel answers; again until every file is
    closed. Returns the households that failed, with why."""
    failures: dict[str, str] = {}
    async with sessions() as session:
        finance = await users.require_actor(session, sample.FINANCE_USERS[0])
        treasury = await users.require_actor(session, sample.TREASURY_USER)
    selections = batch_selections(items)
    codes = [h.code for h in items]
    for round_no in range(first_round, last_round + 1):
        with view.officers(round_no, len(items)) as done:
            result = await drive_all(
                client, sessions, items, signer=signer, concurrency=concurrency, payouts=False, on_done=done
            )
        failures |= result.failures
        view.stepped(round_no, result)
        pending = await tranche_counts(sessions, codes, ("due", "authorised"))
        if not pending:
            break
        for tranche in sorted({n for n, _ in pending}):
            for selection in selections:
                members = [h.code for h in items if in_selection(h, selection)]
                waiting = await tranche_counts(sessions, members, ("due", "authorised"))
                if not any(n == tranche for n, _ in waiting):
                    continue  # nothing of this selection waits for Finance or the treasury at this tranche
                for action, actor in ((BatchAction.AUTHORISE, finance), (BatchAction.RELEASE, treasury)):
                    where = "/".join(filter(None, (selection.decision_ref, selection.district)))
                    with view.batch(action, tranche, selection) as show:
                        batch = await start_batch(
                            client,
                            task_queue,
                            signer,
                            actor,
                            action,
                            tranche,
                            selection,
                            evidence=[f"{action.value}/{where}/t{tranche}/r{round_no}"],
                            ref=f"{label}-r{round_no}",
                            concurrency=8,
                            on_progress=show,
                        )
                    view.batched(batch)
        left = await wait_for_payments(sessions, codes)
        view.answered(await payment_counts(sessions, codes), left)
    # A household refused in one round and closed by a later one is no failure.
    async with sessions() as session:
        return {
            code: why
            for code, why in failures.items()
            if (row := await households.get(session, code)) is None or not Stage(row.stage).terminal
        }


# ------------------------------------------------------------------------------------------- the reform


@dataclass
class Reformed:
    """What the reform did: the gazetteer loaded, the two-tier policy, the reorganisation's run and how long it
    took, the handover records, and a district officer's step refused after the date."""

    loaded: reform.Loaded
    policy: str
    moved: ReorganiseResult
    seconds: float
    handovers: list[reform.Handover]
    refused: tuple[str, str, Refusal] | None


def split_for_reform(items: list[Household], early_share: float = 0.1) -> tuple[list, list, list]:
    """The demo's story before the reform: a tenth of Decision 270's list finished (closed under the old map),
    the rest of it taken through its first round, the supplementary list not started."""
    main = [h for h in items if h.decision_ref == sample.DECISION]
    later = [h for h in items if h.decision_ref != sample.DECISION]
    n = max(1, int(len(main) * early_share))
    return main[:n], main[n:], later


async def apply_reform(
    client: Client,
    sessions: Sessions,
    owner: Sessions,
    task_queue: str,
    state_dir: Path,
    *,
    signer: SigningRing,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> Reformed:
    """1 July 2025: the gazetteer (the generated Lạng Sơn's) loaded, the new communes' officers registered, the
    two-tier policy published, every household in flight moved by one signed reorganisation (timed), the district
    money handed over, and an old district officer's step tried on a moved household."""
    path = state_dir / "gazetteer" / "lang-son-2025.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sample.gazetteer(), ensure_ascii=False, indent=1), encoding="utf-8")
    loaded = await reform.load_gazetteer(owner, path, sample.ADMIN_USER)
    async with sessions() as session, session.begin():
        await users.upsert(session, sample.new_commune_users())
    policy = await reform.publish_two_tier(owner, reform.TWO_TIER_VERSION, sample.ADMIN_USER)
    started = time.perf_counter()
    moved = await reform.apply_reorganisation(
        client,
        sessions,
        task_queue,
        signer,
        sample.ADMIN_USER,
        basis=sample.REFORM_2025,
        policy_version=policy.version,
        on_progress=on_progress,
    )
    seconds = time.perf_counter() - started
    made = await reform.hand_over(sessions, sample.FINANCE_USERS[1], basis=sample.REFORM_2025)
    refused = None
    async with sessions() as session:
        code = await households.first_moved(session, sample.REFORM_2025)
        row = await households.get(session, code) if code else None
    if row is not None:
        old = sample.district_user(row.old_district)
        try:
            await take_step(client, sessions, code, Step.ACCEPT, old, evidence=["BB-NGHIEM-THU"], signer=signer)
        except Refusal as r:
            refused = (code, old, r)
    return Reformed(loaded, policy.version, moved, seconds, made, refused)


async def reload(sessions: Sessions, items: list[Household]) -> list[Household]:
    """The households as the register has them now (a moved one: its new commune, no district)."""
    async with sessions() as session:
        return [h for x in items if (h := await households.get_household(session, x.code))]


# ------------------------------------------------------------------------------------------- the rest


@dataclass
class Extras:
    """Cấp bù and co-financing: a second budget assignment (and whether it was new), the district advance
    paid back by it (None: nothing to pay back), and the preferential loans recorded."""

    received: tuple[Transfer, bool]
    reimbursed: tuple[Transfer | None, bool]
    loans: int


async def finance_extras(sessions: Sessions, items: list[Household]) -> Extras:
    finance_user = sample.FINANCE_USERS[1]
    received = await finance_ops.receive(
        sessions, finance_user, source="MTQG-GNBV", amount=1_000_000_000, ref="Giao dự toán MTQG GNBV 2025 đợt 2"
    )
    reimbursed = await finance_ops.reimburse(
        sessions, finance_user, advance_source="ADV-LOCBINH", ref="QĐ cấp bù Lộc Bình đợt 1"
    )
    poor = [h for h in items if h.beneficiary_group.value == "poor"][:6]
    for h in poor:
        await finance_ops.record_loan(
            sessions,
            sample.VBSP_USER,
            household_code=h.code,
            amount=40_000_000,
            status="disbursed",
            ref=f"HĐ-VAY/{h.code}",
        )
    return Extras(received, reimbursed, len(poor))


async def web_work(
    sessions: Sessions, client: Client, task_queue: str, state_dir: Path, first: Household
) -> ImportReport:
    """A few households left at verification in the first household's commune, so that each officer has
    work waiting in the web app (the demo's own list is closed by now)."""
    rows = sample.households(6, seed=2026, prefix="LS270W", decision=sample.SUPPLEMENTARY_DECISION)
    rows = [r | {"district": first.district, "commune": first.commune, "programme": ""} for r in rows]
    path = state_dir / "web-work.csv"
    sample.write_households_csv(path, rows)
    return await import_file(sessions, client, task_queue, path, sample.PROVINCE_USER)


@dataclass(frozen=True)
class Login:
    kind: str  # what kind of officer
    user: str
    password: str = field(repr=False)
    does: str  # what they do in the programme


async def logins(sessions: Sessions, first: Household, items: list[Household], *, signer: SigningRing) -> list[Login]:
    """Passwords for one officer of each kind (new ones on every demo run), to sign in to the web app or
    prove `--as USER` at the command line; each recorded in the account trail, signed with the front door's
    ring `signer` (a password the trail does not name signs nobody in)."""
    if first.district is None:  # after the reform: the new commune's officers act on the moved households
        other = next((h for h in items if h.district is None and h.commune != first.commune), first)
        place = [
            ("commune officer", sample.new_commune_user(first.commune), f"{first.commune}: verify, report"),
            ("commune chairman", sample.chair_user(first.commune), f"{first.commune}: approve, accept"),
            ("commune chairman", sample.chair_user(other.commune), f"{other.commune} (cannot see {first.commune})"),
        ]
    else:
        other = next((h for h in items if h.district != first.district), first)
        place = [
            ("commune officer", sample.commune_user(first.district, first.commune), f"{first.commune}: verify, report"),
            ("district officer", sample.district_user(first.district), f"{first.district}: approve, accept"),
            (
                "district officer",
                sample.district_user(other.district),
                f"{other.district} (cannot see {first.district})",
            ),
        ]
    who = [
        *place,
        ("finance", sample.FINANCE_USERS[0], "allocate, authorise payout batches"),
        ("finance", sample.FINANCE_USERS[1], "settle (not the same officer who allocated)"),
        ("treasury", sample.TREASURY_USER, "release authorised payouts"),
        ("auditor", sample.AUDITOR_USER, "read-only: timelines, three-way check"),
        ("administrator", sample.ADMIN_USER, "starter.py users … --admin, policy apply, audit restore"),
    ]
    made = []
    async with sessions() as session, session.begin():
        for kind, user, does in who:
            password = secrets.token_urlsafe(9)
            # Recorded in the account trail like any reset, by the one setting the demo up.
            await accounts.reset_password(session, accounts.SETUP, user, password, signer=signer)
            made.append(Login(kind, user, password, does))
    return made
