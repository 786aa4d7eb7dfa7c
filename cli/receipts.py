"""`starter.py receipts …` and `starter.py grievances …`: after the money — Finance's payment verification plans
and their answers, and the grievances (operations/receipts.py). Every `--as USER` is proved first."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer
from rich.table import Table

from cli.command import command, database, err, out
from cli.credentials import PASSWORD_STDIN, TOKEN_STDIN, sign_in
from core.client import connect
from core.formatting import day, dong
from core.settings import Settings
from models.receipts import Answer, Category, Channel, Outcome
from operations import dossier, receipts
from runtime.worker import stack_channel

app = typer.Typer(no_args_is_help=True, help="Payment verification plans: did the money reach the household?")
grievances_app = typer.Typer(no_args_is_help=True, help="Grievances (khiếu nại, phản ánh) about a household")

AS_USER = typer.Option(..., "--as", help="The officer, proved by password or token")


@app.command("plan")
@command
async def receipts_plan(
    settings: Settings,
    name: str = typer.Argument(..., help="The plan's name: 'Xác minh chi trả đợt 1 - 270/QĐ-UBND'"),
    as_user: str = AS_USER,
    decision: str = typer.Option(None, "--decision", help="Only this decision's households"),
    district: str = typer.Option(None, "--district"),
    commune: str = typer.Option(None, "--commune"),
    paid_from: str = typer.Option(None, "--paid-from", help="Confirmed on or after (yyyy-mm-dd)"),
    paid_to: str = typer.Option(None, "--paid-to", help="Confirmed on or before (yyyy-mm-dd)"),
    confidence: float = typer.Option(0.95, "--confidence"),
    margin: float = typer.Option(0.05, "--margin"),
    full: bool = typer.Option(False, "--full", help="Ask every paid household, not a sample"),
    seed: int = typer.Option(None, "--seed", help="Draw again a plan drawn before (default: a new seed)"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Draw a plan over the households whose payments were confirmed: a sample (its size and seed recorded)
    or the full list; households with a risk are always in it."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        plan = await receipts.create_plan(
            sessions,
            as_user,
            name,
            decision_ref=decision,
            district=district,
            commune=commune,
            paid_from=date.fromisoformat(paid_from) if paid_from else None,
            paid_to=date.fromisoformat(paid_to) if paid_to else None,
            confidence=confidence,
            margin=margin,
            full_list=full,
            seed=seed,
        )
    out.print(plan.describe())


@app.command("answer")
@command
async def receipts_answer(
    settings: Settings,
    plan: int = typer.Argument(...),
    code: str = typer.Argument(..., help="Household code"),
    answer: Answer = typer.Argument(...),
    channel: Channel = typer.Option(..., "--channel", help="How the household was asked"),
    amount: int = typer.Option(None, "--amount", help="Đồng the household says it received"),
    note: str = typer.Option(None, "--note", help="What the household said"),
    as_user: str = AS_USER,
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Record what a household of the plan answered; 'not_received' or 'received_issues' opens a grievance."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        done = await receipts.record_answer(sessions, as_user, plan, code, answer, channel, amount=amount, note=note)
    what = "recorded" if done.new else "answered before: the first answer stands"
    opened = f"; grievance {done.grievance} open" if done.grievance else ""
    out.print(f"{done.household_code}: {done.answer.value} {what}{opened}")


@app.command("report")
@command
async def receipts_report(
    settings: Settings,
    plan: int = typer.Argument(...),
    as_user: str = AS_USER,
    xlsx: Path = typer.Option(None, "--xlsx", help="Write the results as an Excel workbook"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """A plan's households, their answers and whether the plan is finished (every household answered)."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        report = await receipts.plan_report(sessions, as_user, plan)
    print_plan(report)
    if xlsx:
        err.print(f"wrote {receipts.write_xlsx(report, xlsx)}")


def print_plan(report: receipts.PlanReport, *, limit: int | None = None) -> None:
    table = Table(*receipts.REPORT_HEADER, title=f"Kế hoạch xác minh {report.plan.id}: {report.plan.name}")
    for cells in receipts.report_rows(report)[:limit]:
        cells[5] = dong(cells[5])
        table.add_row(*[str(c) for c in cells])
    out.print(table)
    counts = ", ".join(f"{k} {v}" for k, v in report.counts().items())
    state = "finished" if report.finished else "not finished"
    out.print(f"plan {report.plan.id}: {report.answered}/{len(report.lines)} answered ({counts}); {state}")


@grievances_app.command("file")
@command
async def grievance_file(
    settings: Settings,
    code: str = typer.Argument(..., help="Household code"),
    category: Category = typer.Option(..., "--category"),
    said: str = typer.Option(..., "--said", help="What the person said"),
    said_by: str = typer.Option(None, "--said-by", help="Who raised it (the person, on whose behalf it is filed)"),
    responsible: str = typer.Option(None, "--responsible", help="The officer it is about (a payment: its releaser)"),
    evidence: list[str] = typer.Option([], "--evidence", "-e"),
    as_user: str = AS_USER,
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """File a grievance on a person's behalf; a payment one holds the household's settlement until resolved."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        gid = await receipts.file_grievance(
            sessions, as_user, code, category, said, said_by=said_by, responsible=responsible, evidence=evidence
        )
    out.print(f"grievance {gid} filed for {code.upper()}")


@grievances_app.command("resolve")
@command
async def grievance_resolve(
    settings: Settings,
    grievance: int = typer.Argument(...),
    outcome: Outcome = typer.Option(..., "--outcome"),
    resolution: str = typer.Option(..., "--resolution", help="What was found and done"),
    evidence: list[str] = typer.Option([], "--evidence", "-e"),
    as_user: str = AS_USER,
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Resolve a grievance: not by the officer it is about, nor by the one who filed it."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    channel = stack_channel(settings) if outcome is Outcome.TRACE_PAYMENT else None
    try:
        async with database(settings) as sessions:
            await receipts.resolve_grievance(
                sessions, as_user, grievance, outcome, resolution, evidence=evidence, channel=channel
            )
    finally:
        if channel is not None:
            await channel.aclose()
    out.print(f"grievance {grievance} {outcome.value}")


@grievances_app.command("list")
@command
async def grievance_list(
    settings: Settings,
    as_user: str = AS_USER,
    open_only: bool = typer.Option(False, "--open"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """The grievances of the officer's area (Finance and auditors: all), by due date."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        lines = await receipts.grievances(sessions, as_user, open_only=open_only)
    table = Table("#", "Mã hộ", "Xã", "Loại", "Nội dung", "Phụ trách", "Hạn", "Kết quả", "Người giải quyết")
    for g in lines:
        due = day(g.due_on) + (" (quá hạn)" if receipts.overdue(g) else "")
        table.add_row(
            str(g.id),
            g.household_code,
            g.commune,
            g.category,
            g.said,
            g.responsible,
            due,
            g.outcome or "open",
            g.resolved_by or "",
        )
    out.print(table)


@app.command("dossier")
@command
async def receipts_dossier(
    settings: Settings,
    xlsx: Path = typer.Option(..., "--xlsx", help="The workbook to write"),
    source: str = typer.Option(None, "--source", help="One funding source (default: every source)"),
    commune: str = typer.Option(None, "--commune", help="One commune (default: the province)"),
    csv_dir: Path = typer.Option(None, "--csv", help="Also one CSV per sheet in this folder"),
    as_user: str = AS_USER,
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """The settlement dossier (hồ sơ quyết toán): runs the three-way verification, reads the witness's latest
    signed checkpoint, and writes the workbook; exit 1 when its totals differ from the reconciliation."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    client = await connect(settings)
    async with database(settings) as sessions:
        d = await dossier.build_verified(client, sessions, settings, as_user, source=source, commune=commune)
    err.print(f"wrote {dossier.write_xlsx(d, xlsx)}")
    if csv_dir:
        err.print(f"wrote {len(dossier.write_csv(d, csv_dir))} CSV files in {csv_dir}")
    expected = ", ".join(f"{k} {dong(v)}" for k, v in d.expected.items()) or "no reconciliation line for this scope"
    out.print(f"{d.scope}, {d.source or 'every source'}: paid {dong(d.paid)}, reserved {dong(d.pending)}; {expected}")
    if d.compared and not d.matches:
        err.print("[bold red]the dossier's totals differ from the reconciliation[/]")
        raise typer.Exit(1)


@grievances_app.command("remind")
@command
async def grievance_remind(settings: Settings) -> None:
    """Remind the officer responsible of a grievance due within 3 days, escalate an overdue one to Finance
    (through the outbox, once each). Run daily."""
    async with database(settings) as sessions:
        written = await receipts.remind(sessions)
    out.print(", ".join(f"{k}: {v}" for k, v in written.items()))
