"""Command line for operators and officers.

    python starter.py stack up|down|status|env
    python starter.py import FILE --as USER
    python starter.py act CODE STEP --as USER [--evidence REF]... [--reason TEXT] [--source CODE]
    python starter.py status CODE [--json]
    python starter.py list [--stage S] [--district D] [--json]
    python starter.py report [--json]
    python starter.py audit chain [CODE]
    python starter.py demo
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import DomainError
from core.logs import configure_logging
from core.migrate import upgrade
from core.settings import ROOT, Settings, get_settings
from core.stack import Stack, StackError
from core.temporal import connect, ensure_search_attributes
from db import audit, households, ledger, outbox
from db.engine import make_engine, make_sessions
from db.policy import current_workflow_policy
from models.household import FORWARD, STAGE_VI, Stage, Step
from models.policy import WorkflowPolicy
from notify.channels import make_channel
from notify.dispatcher import Dispatcher
from operations import reports
from operations.actions import Refusal, household_state, take_step
from operations.demo import drive_all
from operations.imports import ImportRejected, import_file
from operations.policies import add_version, push
from operations.seed import seed_demo as seed

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Housing-support programme engine")
stack_app = typer.Typer(no_args_is_help=True, help="The embedded stack: PostgreSQL, Temporal dev server, worker")
audit_app = typer.Typer(no_args_is_help=True, help="Checks for auditors and inspectors")
policy_app = typer.Typer(no_args_is_help=True, help="Who may take which step: versioned policy data")
app.add_typer(stack_app, name="stack")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")

# Off a terminal (CI logs, pipes) rich would assume 80 columns and squeeze the tables.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
T = TypeVar("T")


def _run(fn: Callable[..., Awaitable[T]], *args, **kwargs) -> T:
    settings = get_settings()
    configure_logging(settings.log_level if settings.explicitly_set("log_level") else "WARNING", settings.log_json)
    return asyncio.run(fn(settings, *args, **kwargs))


@asynccontextmanager
async def _sessions(settings: Settings):
    engine = make_engine(settings)
    try:
        yield make_sessions(engine)
    finally:
        await engine.dispose()


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]refused[/]: {message}")
    raise typer.Exit(code)


def _dong(amount: int) -> str:
    return f"{amount:,}".replace(",", ".")


# ---------------------------------------------------------------------------------------------- stack


@stack_app.command("up")
def stack_up(worker: bool = typer.Option(True, help="Also start a background worker")) -> None:
    """Start what is not running yet (PostgreSQL, Temporal, the worker) and apply migrations."""
    settings = get_settings()
    stack = Stack(settings)
    try:
        _stack_up(stack, worker)
    except StackError as e:
        _fail(str(e))


def _stack_up(stack: Stack, worker: bool) -> None:
    if stack.embedded_db:
        started = stack.postgres().start()
        out.print(f"PostgreSQL  {'started' if started else 'running'} at {stack.settings.database_url}")
    else:
        out.print(f"PostgreSQL  external at {stack.settings.database_url}")
    upgrade(stack.settings.asyncpg_url)
    out.print("Migrations  applied (alembic upgrade head)")
    if stack.embedded_temporal:
        started = stack.temporal().start()
        out.print(f"Temporal    {'started' if started else 'running'} at {stack.settings.temporal_address}, "
                  f"Web UI {stack.settings.temporal_ui_url}")  # fmt: skip
    else:
        out.print(f"Temporal    external at {stack.settings.temporal_address}")

    async def register_search_attributes() -> list[str]:
        return await ensure_search_attributes(await connect(stack.settings), stack.settings.temporal_namespace)

    added = asyncio.run(register_search_attributes())
    if added:
        out.print(f"Temporal    search attributes registered: {', '.join(added)}")
    if worker:
        started = stack.worker().start(stack.env())
        out.print(f"Worker      {'started' if started else 'running'} (log: {stack.worker().log_file.name} "
                  "in the state folder)")  # fmt: skip


@stack_app.command("down")
def stack_down() -> None:
    """Stop the worker, Temporal and PostgreSQL started by 'stack up' (their data is kept)."""
    stack = Stack(get_settings())
    out.print(f"Worker      {'stopped' if stack.worker().stop() else 'was not running'}")
    if stack.embedded_temporal:
        out.print(f"Temporal    {'stopped' if stack.temporal().stop() else 'was not running'}")
    if stack.embedded_db:
        out.print(f"PostgreSQL  {'stopped' if stack.postgres().stop() else 'was not running'}")


@stack_app.command("status")
def stack_status() -> None:
    stack = Stack(get_settings())
    table = Table("part", "where", "state")
    pg = stack.postgres()
    table.add_row("PostgreSQL", stack.settings.database_url,
                  ("running" if pg.running() else "stopped") if stack.embedded_db else "external")  # fmt: skip
    tp = stack.temporal()
    table.add_row("Temporal", stack.settings.temporal_address,
                  ("running" if tp.running() else "stopped") if stack.embedded_temporal else "external")  # fmt: skip
    table.add_row("Web UI", stack.settings.temporal_ui_url, "")
    table.add_row("Worker", stack.settings.temporal_task_queue, "running" if stack.worker().running() else "stopped")
    out.print(table)


@stack_app.command("env")
def stack_env() -> None:
    """Shell-exportable settings, for the temporal CLI and psql: eval "$(python starter.py stack env)"."""
    for key, value in Stack(get_settings()).env().items():
        print(f"export {key}={value}")


@app.command("migrate")
def migrate() -> None:
    """Apply the database migrations (alembic upgrade head)."""
    upgrade(get_settings().asyncpg_url)
    out.print("migrations applied")


# ---------------------------------------------------------------------------------------------- data


@app.command("seed-demo")
def seed_demo() -> None:
    """Load the demo officers, funding sources and budget receipts (safe to re-run)."""
    async def go(settings: Settings) -> dict:
        async with _sessions(settings) as sessions:
            return await seed(sessions)

    out.print(_run(go))


@app.command("import")
def import_list(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV of the approved list"),
    as_user: str = typer.Option(..., "--as", help="User id of the officer importing"),
) -> None:
    """Import an approved list: every row is checked; any problem and nothing is imported."""

    async def go(settings: Settings):
        async with _sessions(settings) as sessions:
            client = await connect(settings, lazy=True)  # not contacted until the list has been registered
            return await import_file(sessions, client, settings.temporal_task_queue, file, as_user)

    try:
        report = _run(go)
    except ImportRejected as rejected:
        err.print(f"[bold red]{file.name} rejected[/]: {len(rejected.problems)} problem(s); nothing was imported")
        for p in rejected.problems:
            err.print(f"  {p}")
        raise typer.Exit(2) from None
    except DomainError as e:
        _fail(str(e))
    out.print(report.describe(file.name))


# ---------------------------------------------------------------------------------------------- actions


@app.command("act")
def act(
    code: str = typer.Argument(..., help="Household code"),
    step: Step = typer.Argument(..., help="The step to take"),
    as_user: str = typer.Option(..., "--as", help="User id of the officer taking the step"),
    evidence: list[str] = typer.Option([], "--evidence", "-e", help="Evidence document reference (repeatable)"),
    reason: str | None = typer.Option(None, "--reason", "-r"),
    source: str | None = typer.Option(None, "--source", help="Funding source (allocate)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Take one step on a household. The engine refuses what the rules do not allow."""

    async def go(settings: Settings):
        async with _sessions(settings) as sessions:
            client = await connect(settings)
            chosen = source or (settings.default_funding_source if step is Step.ALLOCATE else None)
            return await take_step(client, sessions, code, step, as_user, evidence=evidence, reason=reason,
                                   source=chosen)  # fmt: skip

    try:
        result = _run(go)
    except Refusal as r:
        _fail(str(r))
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    money = f", {_dong(result.amount)} đồng" if getattr(result, "amount", None) else ""
    out.print(f"{result.household_code}: {step.value} done — {result.from_stage.value} → {result.to_stage.value}"
              f" (step {result.seq}{money})")  # fmt: skip


@app.command("status")
def status(code: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """A household's stage, money and timeline, from its workflow."""

    async def go(settings: Settings):
        return await household_state(await connect(settings), code)

    try:
        state = _run(go)
    except Refusal as r:
        _fail(str(r))
    if as_json:
        print(state.model_dump_json(indent=2))
        return
    out.print(f"[bold]{state.household_code}[/] — stage [bold]{state.stage.value}[/] ({STAGE_VI[state.stage]}) "
              f"since {state.stage_since:%Y-%m-%d %H:%M} UTC; policy {state.policy_version}")  # fmt: skip
    out.print(f"entitlement {_dong(state.entitlement)} · reserved {_dong(state.reserved)} · paid {_dong(state.paid)}"
              f" · source {state.funding_source or '-'} · reminders {state.reminders_sent}")  # fmt: skip
    table = Table("#", "step", "from → to", "when (UTC)", "who", "evidence", "reason", "đồng")
    for e in state.timeline:
        table.add_row(str(e.seq), e.step.value, f"{e.from_stage.value} → {e.to_stage.value}",
                      f"{e.at:%Y-%m-%d %H:%M:%S}", f"{e.user_id} ({e.role}, {e.agency})", ", ".join(e.evidence),
                      e.reason or "", _dong(e.amount) if e.amount else "")  # fmt: skip
    out.print(table)


@app.command("list")
def list_households(
    stage: Stage | None = typer.Option(None),
    district: str | None = typer.Option(None),
    limit: int = typer.Option(1000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Households from the read model, filtered by stage and district."""

    async def go(settings: Settings):
        async with _sessions(settings) as sessions, sessions() as session:
            return await households.list_rows(session, stage=stage.value if stage else None, district=district,
                                              limit=limit)  # fmt: skip

    rows = _run(go)
    if as_json:
        print(json.dumps([asdict(r) for r in rows], default=str, ensure_ascii=False, indent=2))
        return
    table = Table("code", "district", "commune", "group", "support", "stage", "since", "reserved", "paid",
                  title=f"{len(rows)} households")  # fmt: skip
    for r in rows:
        table.add_row(r.code, r.district, r.commune, r.beneficiary_group, r.support_type, r.stage,
                      f"{r.stage_since:%Y-%m-%d}", _dong(r.reserved), _dong(r.paid))  # fmt: skip
    out.print(table)


@app.command("report")
def report(as_json: bool = typer.Option(False, "--json")) -> None:
    """Households and đồng by district and stage; funds received / reserved / posted / free by source."""

    async def go(settings: Settings):
        async with _sessions(settings) as sessions, sessions() as session:
            return await reports.build(session)

    rep = _run(go)
    if as_json:
        print(json.dumps(rep.as_json(), ensure_ascii=False, indent=2))
        return
    print_report(rep)


def print_report(rep: reports.Report) -> None:
    table = Table("district", "stage", "households", "new builds", "repairs", "reserved (đ)", "paid (đ)",
                  title="Households by district and stage")  # fmt: skip
    for r in rep.by_district_stage:
        table.add_row(r.district, r.stage, str(r.households), str(r.new_builds), str(r.repairs), _dong(r.reserved),
                      _dong(r.paid))  # fmt: skip
    totals = rep.as_json()["totals"]
    table.add_section()
    table.add_row("[bold]total", "", str(totals["households"]), str(totals["new_builds"]), str(totals["repairs"]),
                  _dong(totals["reserved"]), _dong(totals["paid"]))  # fmt: skip
    out.print(table)
    funds = Table("source", "state budget", "received (đ)", "reserved (đ)", "posted (đ)", "free (đ)", "name",
                  title="Funds by source")  # fmt: skip
    for s in rep.by_source:
        funds.add_row(s.code, "yes" if s.is_state_budget else "no", _dong(s.received), _dong(s.reserved),
                      _dong(s.posted), _dong(s.free), s.name)  # fmt: skip
    out.print(funds)


# ---------------------------------------------------------------------------------------------- policy


@policy_app.command("show")
def policy_show(as_json: bool = typer.Option(False, "--json")) -> None:
    """The workflow policy in force today: roles per step, SLA days, steps that need different people."""

    async def go(settings: Settings):
        async with _sessions(settings) as sessions, sessions() as session:
            return await current_workflow_policy(session, date.today())

    current = _run(go)
    if as_json:
        print(current.model_dump_json(indent=2))
        return
    table = Table("step", "roles", "responsible agency", "evidence", "SLA days (stage)",
                  title=f"Workflow policy {current.version}")  # fmt: skip
    stage_of = {step: stage for stage, (step, _) in FORWARD.items()}
    for step in (s for s in Step if s in current.steps):
        rule = current.steps[step]
        stage = stage_of.get(step)
        sla = f"{current.sla_days.get(stage, '-')} ({stage.value})" if stage else "-"
        table.add_row(step.value, ", ".join(rule.roles), rule.responsible_agency,
                      "required" if rule.evidence_required else "-", sla)  # fmt: skip
    out.print(table)
    out.print("different people for: " + "; ".join(f"{a.value} / {b.value}" for a, b in current.distinct_actors))


@policy_app.command("apply")
def policy_apply(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Policy JSON (see 'policy show --json')"),
    as_user: str = typer.Option(..., "--as", help="An officer with a policy admin role"),
    effective_from: str = typer.Option(None, help="YYYY-MM-DD; default today"),
) -> None:
    """Store a new policy version and apply it to every household in flight."""
    try:
        new = WorkflowPolicy.model_validate_json(file.read_bytes())
        start = date.fromisoformat(effective_from) if effective_from else date.today()
    except (ValidationError, ValueError) as e:
        _fail(f"{file.name}: {e}")

    async def go(settings: Settings):
        async with _sessions(settings) as sessions:
            await add_version(sessions, new, start, as_user)
            return await push(await connect(settings), sessions, new, as_user)

    try:
        report = _run(go)
    except DomainError as e:
        _fail(str(e))
    out.print(f"policy {new.version} stored (effective {start}); applied to {report.applied} households in flight"
              + (f", refused by {report.refused}" if report.refused else ""))  # fmt: skip


# ---------------------------------------------------------------------------------------------- audit


@audit_app.command("chain")
def audit_chain(code: str | None = typer.Argument(None, help="One household; all when omitted")) -> None:
    """Recompute the audit log's hash chains; name the first broken row. Exit 1 when broken."""

    async def go(settings: Settings):
        async with _sessions(settings) as sessions, sessions() as session:
            return await audit.verify_chain(session, code)

    result = _run(go)
    if result.ok:
        out.print(f"audit chain verified: {result.rows} rows over {result.households} households, no break")
    else:
        _fail(f"audit chain broken at {result.first_break}")


@app.command("notify-drain")
def notify_drain() -> None:
    """Send every due notification now (the worker does this continuously)."""
    async def go(settings: Settings):
        async with _sessions(settings) as sessions:
            channel = make_channel(settings.notify_channel, settings.notifications_path)
            sent = await Dispatcher(sessions, channel, settings).drain()
            async with sessions() as session:
                return sent, await outbox.counts(session)

    sent, counts = _run(go)
    out.print(f"sent {sent}; outbox now {counts}")


# ---------------------------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    households_csv: Path = typer.Option(ROOT / "data/demo/households.csv", "--households", exists=True),
    concurrency: int = typer.Option(16, min=1, max=200),
) -> None:
    """Start the stack and a worker, import the sample list, take every household through all six stages,
    and print the summary."""
    settings = get_settings()
    stack = Stack(settings)
    out.rule("[bold]1. Stack")
    try:
        _stack_up(stack, worker=True)
    except StackError as e:
        _fail(str(e))

    async def go(settings: Settings) -> None:
        async with _sessions(settings) as sessions:
            client = await connect(settings)
            out.rule("[bold]2. Reference data and the approved list")
            out.print(f"seeded: {await seed(sessions)}")
            rep = await import_file(sessions, client, settings.temporal_task_queue, households_csv, "tinh.luong")
            out.print(rep.describe(households_csv.name))
            async with sessions() as session:
                items = [h for code in rep.codes if (h := await households.get_household(session, code))]

            out.rule("[bold]3. The engine refuses what the rules do not allow")
            first = items[0]
            for step, user in ((Step.SETTLE, "tc.nong"), (Step.VERIFY, "tc.hoang")):
                try:
                    await take_step(client, sessions, first.code, step, user, evidence=["DEMO"])
                except Refusal as r:
                    out.print(f"{first.code}: {step.value} as {user} → [yellow]{r.rule}[/]: {r.message}")

            out.rule("[bold]4. Every household through all six stages")
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=out) as progress:  # fmt: skip
                task = progress.add_task("households", total=len(items))
                result = await drive_all(client, sessions, items, concurrency=concurrency,
                                         on_done=lambda _: progress.advance(task))  # fmt: skip
            out.print(f"{result.closed} households closed now, {result.already_closed} were closed before; "
                      f"{result.steps} steps taken")  # fmt: skip
            for code, why in result.failures.items():
                err.print(f"[red]{code}[/]: {why}")

            out.rule("[bold]5. Summary")
            await _summary(settings, sessions, client, example=first.code)
            if result.failures:
                raise typer.Exit(1)

    _run(go)


async def _summary(settings: Settings, sessions, client, example: str) -> None:
    async with sessions() as session:
        rep = await reports.build(session)
        mismatches = await reports.reconcile_households(session)
        ledger_problems = await ledger.check_invariants(session)
        chain = await audit.verify_chain(session)
        totals = await reports.support_totals(session)
    print_report(rep)
    closed = await client.count_workflows("Stage='closed'")
    checks = Table("check", "result", title="Checks")
    checks.add_row("paid per household = ledger posting = policy amount",
                   "ok" if not mismatches else f"{len(mismatches)} mismatches")  # fmt: skip
    checks.add_row("ledger: balanced, no source below zero, totals = transfers",
                   "ok" if not ledger_problems else "; ".join(ledger_problems))  # fmt: skip
    checks.add_row("audit chain", f"verified: {chain.rows} rows, {chain.households} households" if chain.ok
                   else f"BROKEN at {chain.first_break}")  # fmt: skip
    checks.add_row("list totals", f"{totals['new_builds']} new builds, {totals['repairs']} repairs, "
                   f"{_dong(totals['paid'])} đồng paid")  # fmt: skip
    checks.add_row("temporal workflow list --query \"Stage='closed'\"", f"{closed.count} workflows")
    out.print(checks)
    for m in mismatches[:10]:
        err.print(f"[red]{m}[/]")
    out.rule("[bold]Where to look next")
    out.print(f"Temporal Web UI:  {settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows")
    out.print('Environment:      eval "$(python starter.py stack env)"')
    out.print('                  then: temporal workflow list --query "Stage=\'closed\'"; psql "$DATABASE_URL"')
    out.print("Households:       python starter.py list --stage closed --district 'Lộc Bình'")
    out.print(f"One household:    python starter.py status {example}")
    out.print("Report:           python starter.py report [--json]")
    out.print("Audit chain:      python starter.py audit chain")
    out.print("Stop everything:  python starter.py stack down")
    if mismatches or ledger_problems or not chain.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    try:
        app()
    except StackError as e:
        err.print(f"[bold red]stack[/]: {e}")
        sys.exit(1)
