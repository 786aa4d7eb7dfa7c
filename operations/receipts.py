"""After the money: Finance's payment verification plans (did the money reach the household?), their answers,
and the grievances an answer opens or an officer files on a person's behalf.

A plan is drawn over the households whose payments the channel confirmed (a decision, a district, a commune, a
period), as a full list or a sample (operations/sampling.py: its size from the confidence and margin, its
seed recorded); every household whose payment carries a risk is always in it. A commune officer of the
household, or Finance, records each answer once. "Not received" or "received with issues" opens a payment
grievance about the officer who released the payment, due in the policy's `grievance_days`; until it is
resolved by someone else, the household's settlement is refused (`GrievanceOpen`, activities/review_checks.py).
A resolution finding the money did not arrive is `trace_payment`: the payment is traced with the channel by
its end-to-end id, never paid a second time from here.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import structlog

from core.cells import append_row
from core.errors import Refusal
from core.formatting import day, today
from db import households, outbox, users
from db import policy as policy_db
from db import receipts as db
from db.engine import Sessions
from finance.channel import PaymentChannel
from models.actor import Actor
from models.receipts import OPENS, Answer, Category, Channel, Outcome
from operations.finance_ops import require_power
from operations.sampling import DESIGN_FACTOR, draw, sample_size

log = structlog.get_logger(__name__)


# Roles that read what they may see here and write nothing: the auditors, the payment channel's system user.
READ_ONLY_ROLES = ("auditor", "payment_channel")


async def _in_area(session, actor: Actor, lines: list) -> list:
    """The lines (of a plan, of the grievances) whose household the actor's jurisdiction covers: all of them for
    a role that reads the province's money records whole (WorkflowPolicy.reads_money)."""
    if (await policy_db.policy_today(session)).reads_money(actor.role):
        return lines
    found = await households.get_households(session, sorted({line.household_code for line in lines}))
    return [line for line in lines if (h := found.get(line.household_code)) and actor.jurisdiction.covers(h)]


async def _officer_of(session, user_id: str, household_code: str, what: str) -> Actor:
    """Finance, or an officer whose jurisdiction covers the household."""
    actor = await users.require_actor(session, user_id)
    current = await policy_db.policy_today(session)
    if actor.role in current.finance_roles:
        return actor
    h = await households.get_household(session, household_code)
    if h is None:
        raise Refusal("UnknownHousehold", f"no household {household_code} on any imported list")
    if actor.role in READ_ONLY_ROLES or not actor.jurisdiction.covers(h):
        raise Refusal("OutsideJurisdiction", f"{user_id} ({actor.role}) may not {what} for household {household_code}")
    return actor


@dataclass(frozen=True)
class Plan:
    id: int
    name: str
    population: int
    risk: int
    sampled: int  # households drawn at random from those without a risk (all of them for a full list)
    seed: int
    confidence: float | None
    margin: float | None

    @property
    def asked(self) -> int:
        return self.risk + self.sampled

    def describe(self) -> str:
        how = (
            "full list"
            if self.confidence is None
            else f"sample at {self.confidence:.0%} confidence, ±{self.margin:.0%}, ×{DESIGN_FACTOR} (seed {self.seed})"
        )
        return (
            f"plan {self.id} '{self.name}': {self.asked} of {self.population} paid households to ask — "
            f"{self.risk} always (a risk), {self.sampled} drawn; {how}"
        )


async def create_plan(
    sessions: Sessions,
    user_id: str,
    name: str,
    *,
    decision_ref: str | None = None,
    district: str | None = None,
    commune: str | None = None,
    paid_from: date | None = None,
    paid_to: date | None = None,
    confidence: float | None = 0.95,
    margin: float | None = 0.05,
    full_list: bool = False,
    seed: int | None = None,
) -> Plan:
    """Draw and store a plan (Finance only). Refused when no paid household matches."""
    seed = secrets.randbits(62) if seed is None else seed
    async with sessions() as session, session.begin():
        actor = await require_power(session, user_id, lambda p: p.finance_roles, "create a payment verification plan")
        codes = await db.paid_households(
            session, decision_ref=decision_ref, district=district, commune=commune, paid_from=paid_from, paid_to=paid_to
        )
        if not codes:
            raise Refusal(
                "NothingPaid", "no household with a confirmed payment matches the plan's decision, units and period"
            )
        risky = await db.risks(session, codes)
        rest = len(codes) - len(risky)
        try:
            size = None if full_list else sample_size(rest, confidence, margin)
        except (TypeError, ValueError) as e:
            raise Refusal("InvalidInput", str(e)) from None
        drawn = draw(codes, risky, size_of_rest=size, seed=seed)
        plan_id = await db.add_plan(
            session,
            {code: risky.get(code) for code in codes},
            drawn.reasons,
            name=name,
            decision_ref=decision_ref,
            district=district,
            commune=commune,
            paid_from=paid_from,
            paid_to=paid_to,
            full_list=full_list,
            confidence=None if full_list else confidence,
            margin=None if full_list else margin,
            design_factor=DESIGN_FACTOR,
            population=len(codes),
            risk_count=drawn.risk,
            sample_size=drawn.sampled,
            seed=seed,
            created_by=actor.user_id,
        )
    plan = Plan(
        plan_id,
        name,
        len(codes),
        drawn.risk,
        drawn.sampled,
        seed,
        None if full_list else confidence,
        None if full_list else margin,
    )
    log.info("verification_plan_created", plan=plan_id, population=len(codes), risk=drawn.risk, sampled=drawn.sampled)
    return plan


async def redraw(sessions: Sessions, plan_id: int) -> bool:
    """Whether the plan's households are exactly what its stored population, risks, size and seed draw: an
    auditor's check that nobody picked them by hand."""
    async with sessions() as session:
        plan = await db.plan(session, plan_id)
        if plan is None:
            raise Refusal("UnknownPlan", f"no verification plan {plan_id}")
        population = await db.population(session, plan_id)
        stored = await db.drawn(session, plan_id)
    risks = {c: r for c, r in population.items() if r}
    rest = len(population) - len(risks)
    size = None if plan.full_list else sample_size(rest, plan.confidence, plan.margin, plan.design_factor)
    return draw(population, risks, size_of_rest=size, seed=plan.seed).reasons == stored


@dataclass(frozen=True)
class Answered:
    household_code: str
    answer: Answer
    new: bool  # False: answered before; the first answer stands
    grievance: int | None  # the grievance it opened


async def record_answer(
    sessions: Sessions,
    user_id: str,
    plan_id: int,
    household_code: str,
    answer: Answer,
    channel: Channel,
    *,
    amount: int | None = None,
    note: str | None = None,
) -> Answered:
    """A household's answer to the plan, asked by a commune officer of it or by Finance; a "not received" or
    "received with issues" answer opens a payment grievance in the same transaction."""
    code = household_code.strip().upper()
    answer, channel = Answer(answer), Channel(channel)
    if amount is not None and amount < 0:
        raise Refusal("InvalidInput", "amount: đồng received, not negative")
    async with sessions() as session, session.begin():
        actor = await _officer_of(session, user_id, code, "record a payment verification answer")
        if await db.plan(session, plan_id) is None:
            raise Refusal("UnknownPlan", f"no verification plan {plan_id}")
        if not await db.in_plan(session, plan_id, code):
            raise Refusal("NotInPlan", f"household {code} is not among the households plan {plan_id} asks")
        new = await db.add_answer(
            session,
            plan_id=plan_id,
            household_code=code,
            answer=answer.value,
            amount=amount,
            asked_by=actor.user_id,
            channel=channel.value,
            note=(note or "").strip() or None,
        )
        stored = await db.answer_of(session, plan_id, code)
        grievance = None
        category = OPENS.get(Answer(stored.answer))
        if category is not None:
            grievance = await _open(
                session,
                code,
                category,
                key=f"plan:{plan_id}:{code}",
                said=stored.note or f"{Answer(stored.answer).value} (plan {plan_id}, asked by {stored.channel})",
                opened_by=stored.asked_by,
                evidence=[],
                plan_id=plan_id,
            )
    return Answered(code, Answer(stored.answer), new, grievance)


async def _open(
    session,
    code: str,
    category: Category,
    *,
    key: str,
    said: str,
    opened_by: str,
    evidence,
    plan_id=None,
    said_by=None,
    responsible=None,
) -> int:
    """File the grievance once by `key`. A payment grievance is about who released the household's last
    payment; any other names the officer it is about."""
    current = await policy_db.policy_today(session)
    if category.payment:
        releaser = await db.last_releaser(session, code)
        if responsible is not None and responsible != releaser:
            raise Refusal(
                "ResponsibleFixed",
                f"a payment grievance of household {code} is about who released its payment ({releaser}), "
                f"not {responsible}",
            )
        responsible = releaser
    if responsible is None:
        raise Refusal("ResponsibleMissing", f"a grievance about household {code} needs the officer responsible")
    if await users.get(session, responsible) is None:
        raise Refusal("UnknownUser", f"user {responsible!r} is not registered")
    gid, _ = await db.add_grievance(
        session,
        idempotency_key=key,
        household_code=code,
        category=category.value,
        said=said,
        said_by=said_by,
        evidence=list(evidence),
        responsible=responsible,
        due_on=today() + timedelta(days=current.grievance_days),
        opened_by=opened_by,
        plan_id=plan_id,
    )
    return gid


async def file_grievance(
    sessions: Sessions,
    user_id: str,
    household_code: str,
    category: Category,
    said: str,
    *,
    said_by: str | None = None,
    responsible: str | None = None,
    evidence: list[str] | None = None,
    key: str | None = None,
) -> int:
    """An officer files a grievance on a person's behalf (said_by: who raised it). `responsible`: the officer
    it is about (a payment grievance: who released the household's last payment, always). `key`: the caller's
    idempotency key; by default the same officer filing the same words for the same household the same day
    files one grievance, however often the request is sent."""
    code = household_code.strip().upper()
    category = Category(category)
    if not said.strip():
        raise Refusal("InvalidInput", "said: what the person said is required")
    async with sessions() as session, session.begin():
        actor = await _officer_of(session, user_id, code, "file a grievance")
        words = "\x1f".join((code, category.value, said.strip(), said_by or "", actor.user_id, today().isoformat()))
        return await _open(
            session,
            code,
            category,
            key=key or f"filed:{hashlib.sha256(words.encode()).hexdigest()}",
            said=said.strip(),
            said_by=said_by,
            opened_by=actor.user_id,
            evidence=evidence or [],
            responsible=responsible,
        )


async def trace(channel: PaymentChannel, payment_ids: list[str]) -> list[str]:
    """The channel's own statement for each payment, by its end-to-end id: what a `trace_payment` resolution
    rests on. Nothing is paid again here; a payment the channel holds unpaid is Finance's to re-authorise."""
    lines = []
    for pid in payment_ids:
        s = await channel.status(pid)
        lines.append(
            f"{pid}: {s.state}" + (f" {s.bank_ref}" if s.bank_ref else "") + (f" ({s.reason})" if s.reason else "")
        )
    return lines


async def _resolver(session, user_id: str, grievance_id: int):
    """The grievance and the actor, if the actor may resolve it now."""
    g = await db.grievance(session, grievance_id)
    if g is None:
        raise Refusal("UnknownGrievance", f"no grievance {grievance_id}")
    actor = await _officer_of(session, user_id, g.household_code, "resolve a grievance")
    if await db.resolution_of(session, grievance_id) is not None:
        raise Refusal("AlreadyResolved", f"grievance {grievance_id} was resolved already")
    why = None
    if actor.user_id == g.responsible:
        why = "is the officer it is about"
    elif actor.user_id == g.opened_by:
        why = "filed it"
    elif Category(g.category).payment and actor.user_id in await db.releasers(session, g.household_code):
        why = "released a payment of the household"
    if why:
        raise Refusal("SegregationOfDuties", f"user {actor.user_id} {why} and may not resolve grievance {grievance_id}")
    return g, actor


async def resolve_grievance(
    sessions: Sessions,
    user_id: str,
    grievance_id: int,
    outcome: Outcome,
    resolution: str,
    *,
    evidence: list[str] | None = None,
    channel: PaymentChannel | None = None,
) -> None:
    """Resolve a grievance, by neither the officer it is about, nor the one who filed it, nor (a payment one)
    anyone who released a payment of the household; PostgreSQL holds the same rule. Refused when resolved
    already, by a concurrent resolution too. `trace_payment` with the payment `channel`: once the resolver is
    found allowed, the channel's statement for each of the household's payments is asked and kept with the
    resolution (its references as evidence)."""
    outcome = Outcome(outcome)
    if not resolution.strip():
        raise Refusal("ReasonMissing", "a resolution says what was found and done")
    if outcome is Outcome.TRACE_PAYMENT and channel is None:
        raise Refusal(
            "ChannelRequired",
            "a trace asks the payment channel for its statement: resolve it with `grievances resolve "
            "--outcome trace_payment` where the channel is reachable",
        )
    async with sessions() as session:
        g, actor = await _resolver(session, user_id, grievance_id)
        ids = await db.payment_ids(session, g.household_code)
    resolution, evidence = resolution.strip(), list(evidence or [])
    if outcome is Outcome.TRACE_PAYMENT:
        statement = await trace(channel, ids)
        resolution = f"{resolution} — {'; '.join(statement) or 'the channel holds no payment of it'}"
        evidence += [f"sao kê {line.split(':')[0]}" for line in statement]
    async with sessions() as session, session.begin():
        await _resolver(session, user_id, grievance_id)  # again, in the transaction that writes
        done = await db.add_resolution(
            session,
            grievance_id=grievance_id,
            outcome=outcome.value,
            resolution=resolution,
            evidence=evidence,
            resolved_by=actor.user_id,
        )
        if not done:
            raise Refusal("AlreadyResolved", f"grievance {grievance_id} was resolved already")
    log.info("grievance_resolved", grievance=grievance_id, outcome=outcome.value, by=user_id)


@dataclass(frozen=True)
class PlanReport:
    plan: object
    lines: list[db.PlanLine]

    @property
    def answered(self) -> int:
        return sum(1 for line in self.lines if line.answer)

    @property
    def finished(self) -> bool:
        """A plan finishes only when every household it asks has answered."""
        return self.answered == len(self.lines)

    def counts(self) -> dict[str, int]:
        out = {a.value: 0 for a in Answer}
        for line in self.lines:
            if line.answer:
                out[line.answer] += 1
        return out


async def plan_report(sessions: Sessions, user_id: str, plan_id: int) -> PlanReport:
    """The plan and its households: all of them for Finance and auditors; for an officer, those of their area
    (the ones they ask), so `finished` is then about their part."""
    async with sessions() as session:
        actor = await users.require_actor(session, user_id)
        plan = await db.plan(session, plan_id)
        if plan is None:
            raise Refusal("UnknownPlan", f"no verification plan {plan_id}")
        if actor.role == "payment_channel":
            raise Refusal("RoleNotAllowed", f"role {actor.role!r} may not read verification plans")
        return PlanReport(plan, await _in_area(session, actor, await db.plan_lines(session, plan_id)))


async def plans(sessions: Sessions) -> list:
    """Every plan, newest first."""
    async with sessions() as session:
        return await db.plans(session)


REPORT_HEADER = [
    "Mã hộ",
    "Chủ hộ",
    "Huyện",
    "Xã",
    "Lý do chọn",
    "Đã chi (đ)",
    "Trả lời",
    "Số tiền nhận (đ)",
    "Người hỏi",
    "Cách hỏi",
    "Ghi chú",
    "Ngày",
]


def report_rows(report: PlanReport) -> list[list]:
    return [
        [
            line.household_code,
            line.head_of_household,
            line.district or "",
            line.commune,
            line.reason,
            line.paid,
            line.answer or "",
            line.amount if line.amount is not None else "",
            line.asked_by or "",
            line.channel or "",
            line.note or "",
            day(line.answered_at) if line.answered_at else "",
        ]
        for line in report.lines
    ]


def write_xlsx(report: PlanReport, path: Path) -> Path:
    """The plan's results as a workbook a person opens in Excel: its parameters, then one row per household."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    p = report.plan
    wb = Workbook()
    ws = wb.active
    ws.title = "Kết quả xác minh"
    for label, value in (
        ("Kế hoạch", f"{p.id} — {p.name}"),
        ("Số hộ đã chi", p.population),
        ("Hộ luôn hỏi (rủi ro)", p.risk_count),
        ("Hộ chọn ngẫu nhiên", p.sample_size),
        (
            "Độ tin cậy / sai số",
            "toàn bộ danh sách" if p.full_list else f"{float(p.confidence):.0%} / ±{float(p.margin):.0%}",
        ),
        ("Hệ số thiết kế", float(p.design_factor)),
        ("Hạt giống (seed)", str(p.seed)),
        ("Đã trả lời", f"{report.answered}/{len(report.lines)}"),
    ):
        append_row(ws, [label, value])
    ws.append([])
    append_row(ws, REPORT_HEADER)
    for cell in ws[ws.max_row]:
        cell.font = Font(bold=True)
    for row in report_rows(report):
        append_row(ws, row)
        ws.cell(row=ws.max_row, column=6).number_format = "#,##0"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


async def grievances(sessions: Sessions, user_id: str, *, open_only: bool = False) -> list[db.GrievanceLine]:
    """The grievances the user may see: Finance and auditors all of them, an officer those of their area."""
    async with sessions() as session:
        actor = await users.require_actor(session, user_id)
        return await _in_area(session, actor, await db.grievance_lines(session, open_only=open_only))


def overdue(line: db.GrievanceLine, on: date | None = None) -> bool:
    return line.outcome is None and line.due_on < (on or today())


REMIND_DAYS_BEFORE = 3


async def remind(sessions: Sessions, on: date | None = None) -> dict[str, int]:
    """Through the outbox, once each (keyed by grievance): a reminder when an open grievance is due within
    REMIND_DAYS_BEFORE days, to the agency that resolves it (Finance for a payment grievance, else the UBND of
    the household's unit; never only the officer it is about, who may not resolve it), and its escalation to
    the province once overdue. Run daily (`grievances remind`); running it again writes nothing new."""
    on = on or today()
    written = {"grievance_reminder": 0, "grievance_overdue": 0}
    async with sessions() as session, session.begin():
        current = await policy_db.policy_today(session)
        for g in await db.grievance_lines(session, open_only=True):
            where = f"{g.commune}" + (f", {g.district}" if g.district else "")
            due = day(g.due_on)
            if g.due_on - timedelta(days=REMIND_DAYS_BEFORE) <= on:
                written["grievance_reminder"] += await outbox.enqueue(
                    session,
                    key=f"grievance:{g.id}:reminder",
                    household_code=g.household_code,
                    kind="grievance_reminder",
                    channel="agency",
                    recipient=current.finance_agency
                    if Category(g.category).payment
                    else f"UBND {g.district or g.commune} ({g.commune})",
                    subject=f"Nhắc hạn giải quyết phản ánh #{g.id} của hộ {g.household_code} (hạn {due})",
                    body=f"Phản ánh ({g.category}) của hộ {g.household_code} ({where}): {g.said}. Hạn {due}.",
                )
            if g.due_on < on:
                written["grievance_overdue"] += await outbox.enqueue(
                    session,
                    key=f"grievance:{g.id}:overdue",
                    household_code=g.household_code,
                    kind="grievance_overdue",
                    channel="agency",
                    recipient=f"UBND tỉnh, {current.finance_agency}",
                    subject=f"Phản ánh #{g.id} của hộ {g.household_code} quá hạn giải quyết ({due})",
                    body=f"Phản ánh ({g.category}) của hộ {g.household_code} ({where}), phụ trách {g.responsible}: "
                    f"{g.said}. Quá hạn từ {due}; đề nghị {current.finance_agency} chỉ đạo giải quyết.",
                )
    return written
