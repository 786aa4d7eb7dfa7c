"""`starter.py finance …`: funding sources and what arrives in them, payout batches, approving decisions,
cấp bù (reimbursing a district's advance) and VBSP loans. Amounts are whole đồng, checked before anyone is
asked for a password; every `--as USER` is proved (cli/credentials.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from cli.command import command, database, err, fail, out, progress
from cli.credentials import PASSWORD_STDIN, TOKEN_STDIN, sign_in
from core.client import connect
from core.formatting import amount as grouped
from core.formatting import dong, today
from core.settings import Settings
from core.signing import load_ring
from db import finance as finance_db
from models.finance import BatchAction, BatchProgress, BatchSelection, PayoutBatchResult
from operations import finance_ops, payouts, reconciliation

app = typer.Typer(no_args_is_help=True, help="Funding sources, payout batches, decisions, cấp bù, loans")


@app.command("sources")
@command
async def finance_sources(settings: Settings, as_json: bool = typer.Option(False, "--json")) -> None:
    """Funding sources, their rules and balances (received, reserved, released, paid, free)."""
    async with database(settings) as sessions, sessions() as session:
        rules = await finance_db.source_rules(session)
        lines = (await reconciliation.reconcile(session)).sources
    if as_json:
        print(
            json.dumps(
                [asdict(s) | {"free": s.free, "priority": rules[s.code][0], "rules": rules[s.code][1]} for s in lines],
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    table = Table(
        "source",
        "category",
        "state budget",
        "priority",
        "rules",
        "received",
        "reserved",
        "released",
        "paid",
        "free",
        title="Funding sources",
    )
    for s in lines:
        table.add_row(
            s.code,
            s.category,
            "yes" if s.state_budget else "no",
            str(rules[s.code][0]),
            json.dumps(rules[s.code][1], ensure_ascii=False),
            grouped(s.received),
            grouped(s.reserved),
            grouped(s.released),
            grouped(s.paid),
            grouped(s.free),
        )
    out.print(table)


@app.command("source-add")
@command
async def finance_source_add(
    settings: Settings,
    code: str,
    name: str = typer.Option(...),
    category: str = typer.Option(..., help=", ".join(finance_ops.CATEGORIES)),
    state_budget: bool = typer.Option(..., "--state-budget/--not-state-budget"),
    priority: int = typer.Option(100, help="Lower is drawn on first within its tier"),
    rules: str = typer.Option("{}", help='JSON, e.g. {"programmes": ["MTQG-GNBV"], "districts": ["Lộc Bình"]}'),
    as_user: str = typer.Option(..., "--as"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Add a funding source (or update an existing one's name, priority and rules)."""
    try:
        parsed = json.loads(rules)
    except json.JSONDecodeError as e:
        fail(f"--rules is not JSON: {e}")
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        try:
            new = await finance_ops.add_source(
                sessions,
                as_user,
                code=code,
                name=name,
                category=category,
                state_budget=state_budget,
                priority=priority,
                rules=parsed,
            )
        except ValidationError as e:
            fail(f"--rules: {e}")
    out.print(f"source {code} {'added' if new else 'updated'}")


@app.command("receive")
@command
async def finance_receive(
    settings: Settings,
    source: str,
    amount: str = typer.Argument(..., help="Whole đồng; 1.200.000.000 and 1_200_000_000 are accepted"),
    ref: str = typer.Option(..., "--ref", help="The document that brought the money (the idempotency key)"),
    as_user: str = typer.Option(..., "--as"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Record budget or donations arriving in a source. The same --ref twice records it once."""
    whole = finance_ops.parse_dong(amount)
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        t, new = await finance_ops.receive(sessions, as_user, source=source, amount=whole, ref=ref)
    if new:
        out.print(f"{source}: received {dong(t.amount)} ({ref}), transfer {t.id}")
    else:
        out.print(f"{source}: {ref} was recorded before ({dong(t.amount)}, transfer {t.id}); nothing written")


@app.command("batch")
@command
async def finance_batch(
    settings: Settings,
    action: BatchAction,
    tranche: int = typer.Option(..., "--tranche", min=1),
    as_user: str = typer.Option(..., "--as"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
    district: str | None = typer.Option(None),
    decision: str | None = typer.Option(None, help="Decision reference, e.g. 270/QĐ-UBND"),
    codes: list[str] = typer.Option([], "--code", help="Household code (repeatable)"),
    evidence: list[str] = typer.Option([], "--evidence", "-e"),
    ref: str = typer.Option(today().isoformat(), "--ref", help="Batch reference; the same one re-runs it"),
    concurrency: int = typer.Option(8, min=1, max=64),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Authorise (Finance) or release (treasury / commune) one tranche for many households at once. Safe to
    run again: what is done already is skipped."""
    selection = BatchSelection(district=district, decision_ref=decision, codes=[c.upper() for c in codes])
    user = await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    client = await connect(settings)
    shown_on = err if as_json else out  # with --json, standard output carries the result alone
    with batch_progress(action, tranche, selection, console=shown_on) as show:
        result = await payouts.start_batch(
            client,
            settings.temporal_task_queue,
            load_ring(settings),
            user.actor(),
            action,
            tranche,
            selection,
            evidence=evidence or [f"{action.value}/{ref}"],
            ref=ref,
            concurrency=concurrency,
            on_progress=show,
        )
    print_batch(result, console=shown_on)
    if as_json:
        print(result.model_dump_json(indent=2))
    if result.progress.failed:
        raise typer.Exit(1)


@contextmanager
def batch_progress(
    action: BatchAction, tranche: int, selection: BatchSelection, *, console: Console = out
) -> Iterator[Callable[[BatchProgress], None]]:
    """A progress bar for one payout batch; yields what to call with the batch's progress."""
    with progress(console=console) as bar:
        task = bar.add_task(f"{action.value} tranche {tranche} — {selection.describe()}", total=None)
        yield lambda p: bar.update(task, total=p.total or None, completed=p.finished)


def print_batch(result: PayoutBatchResult, *, console: Console = out) -> None:
    """A batch's outcome in a line, and its failures with the rule that refused each."""
    p = result.progress
    console.print(
        f"batch {result.batch_id}: {p.done} done ({dong(result.amount)}), {p.skipped} skipped (done before), "
        f"{p.failed} failed, of {p.total}"
    )
    if p.failed:
        table = Table("household", "rule", "message", title="Failures")
        for i in result.items:
            if i.outcome == "failed":
                table.add_row(i.household_code, i.rule or "", i.message or "")
        console.print(table)


@app.command("decision-add")
@command
async def finance_decision_add(
    settings: Settings,
    ref: str,
    supplements: str | None = typer.Option(None, help="The decision whose list this one amends"),
    decided_on: str | None = typer.Option(None, "--date", help="YYYY-MM-DD"),
    note: str | None = typer.Option(None),
    as_user: str = typer.Option(..., "--as"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Register an approving decision; a supplementary one names the decision it amends."""
    try:
        when = date.fromisoformat(decided_on) if decided_on else None
    except ValueError:
        fail(f"--date {decided_on!r} is not YYYY-MM-DD")
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        new = await finance_ops.add_decision(
            sessions, as_user, ref, supplements=supplements, decided_on=when, note=note
        )
    out.print(
        f"decision {ref}: {'registered' if new else 'already registered'}"
        + (f" (supplements {supplements})" if supplements else "")
    )


@app.command("reimburse")
@command
async def finance_reimburse(
    settings: Settings,
    advance_source: str,
    ref: str = typer.Option(..., "--ref", help="The reimbursement decision (the idempotency key)"),
    amount: str | None = typer.Option(None, help="Default: all that is outstanding, as far as the payer has free"),
    as_user: str = typer.Option(..., "--as"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Cấp bù: pay back a district's advance for national target programme households."""
    whole = finance_ops.parse_dong(amount) if amount else None
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        t, new = await finance_ops.reimburse(sessions, as_user, advance_source=advance_source, ref=ref, amount=whole)
    if t is None:
        out.print(f"{advance_source}: nothing outstanding, or nothing free to pay it")
    else:
        out.print(
            f"{advance_source}: reimbursed {dong(t.amount)} ({ref}), transfer {t.id}"
            + ("" if new else " — recorded before; nothing written")
        )


@app.command("loan")
@command
async def finance_loan(
    settings: Settings,
    code: str,
    amount: str,
    status: str = typer.Option(..., help=", ".join(finance_db.LOAN_STATUSES)),
    ref: str = typer.Option(..., "--ref", help="The loan contract or event reference (the idempotency key)"),
    as_user: str = typer.Option(..., "--as"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Record a VBSP preferential loan event for a household: co-financing, never grant money."""
    whole = finance_ops.parse_dong(amount)
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        new = await finance_ops.record_loan(
            sessions, as_user, household_code=code.upper(), amount=whole, status=status, ref=ref
        )
    out.print(f"{code}: loan {status} {dong(whole)} {'recorded' if new else 'was recorded before'}")
