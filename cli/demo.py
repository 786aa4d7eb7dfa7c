"""`starter.py demo`: the embedded stack and a worker, the sample list (or a generated province) imported,
every household through all six stages, and the summary. The parts are operations/demo.py's and the checks
operations/checks.py's; this module shows them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import typer
from rich.table import Table

from cli.command import database, err, fail, out, progress, run
from cli.finance import batch_progress, print_batch
from cli.reform import print_handovers, print_reorganisation
from cli.reports import print_reconciliation, print_report
from cli.stack import start as start_stack
from core.client import connect
from core.formatting import dong
from core.matching import key_if_present
from core.settings import ROOT, Settings, get_settings
from core.signing import load_ring
from models.finance import BatchAction, BatchProgress, BatchSelection, PayoutBatchResult
from models.household import Household
from operations import checks, demo
from operations.reform import write_handover_xlsx
from runtime.stack import Stack, StackError
from runtime.worker import stack_channel

app = typer.Typer()


@app.command("demo")
def demo_cmd(
    households_csv: Path = typer.Option(ROOT / "data/demo/households.csv", "--households", exists=True),
    concurrency: int = typer.Option(None, min=1, max=200, help="Officers acting at once (16; a province: 32)"),
    province: str | None = typer.Option(
        None,
        "--province",
        help="Run on a generated province instead of the sample list: 'lang-son' (Lạng Sơn 2025, 6,508 households)",
    ),
) -> None:
    """Start the stack and a worker, import the sample list, take every household through all six stages
    (allocation split across sources, tranches paid through the payment channel), and print the summary."""
    # The simulated bank fails a few first attempts so the demo shows retries; a running bank keeps its own.
    os.environ.setdefault("PAYMENT_FAIL_RATE", "0.05")
    if province:  # a whole province on two cores: two worker processes, a channel that answers in 0.05 s
        os.environ.setdefault("WORKER_PROCESSES", "2")
        os.environ.setdefault("PAYMENT_DELAY_SECONDS", "0.05")
    concurrency = concurrency or (32 if province else 16)
    settings = get_settings()
    budget = None
    if province:
        if province not in demo.PROVINCES:
            fail(f"--province {province!r}: this build generates {', '.join(repr(p) for p in demo.PROVINCES)}")
        households_csv, budget = demo.province_files(settings.state_dir, province)
    out.rule("[bold]1. Stack")
    try:
        start_stack(Stack(settings), worker=True)
    except StackError as e:
        fail(str(e))
    # The stack's start runs event loops of its own; the rest runs in one.
    run(_demo, households_csv, budget, province, concurrency)


async def _demo(settings: Settings, households_csv: Path, budget: int | None, province: str | None, concurrency: int):
    signer = load_ring(settings)  # the demo acts as its officers' front door: one ring for every step
    async with database(settings) as sessions:
        client = await connect(settings)
        task_queue = settings.temporal_task_queue
        out.rule("[bold]2. Reference data and the approved list")
        key = key_if_present(settings.match_key_path)  # the stack makes it: lists are keyed on import
        loaded = await demo.load(
            sessions, client, task_queue, households_csv, budget=budget, province=province, match_key=key
        )
        out.print(f"seeded: {loaded.seeded}")
        if loaded.budget:
            out.print(f"NS-TINH received {dong(loaded.budget.amount)}: the province's whole list at today's policy")
        for what, report in loaded.imports:
            out.print(report.describe(what))
        items = loaded.items

        out.rule("[bold]3. The engine refuses what the rules do not allow")
        first = items[0]
        for step, user, refusal in await demo.refusals(client, sessions, first, signer=signer):
            out.print(f"{first.code}: {step.value} as {user} → [yellow]{refusal.rule}[/]: {refusal.message}")

        early, started, later = demo.split_for_reform(items)
        out.rule("[bold]4. Before the money: posting and objections, another programme's list, a change re-approved")
        async with database(settings, url=settings.owner_asyncpg_url) as owner:
            reviewed = await demo.before_the_money(
                client, sessions, owner, early, settings.state_dir, key=key, signer=signer
            )
        for line in reviewed.lines:
            out.print(line)

        out.rule("[bold]5. Before the reform: part of the list through the programme (to 30/06/2025)")
        out.print(
            f"{len(early)} households of {first.decision_ref} finished under the old map; {len(started)} taken "
            f"through their first round; the {len(later)} of the supplementary list not started"
        )
        view = _Rounds()
        failures = await demo.rounds(
            client, sessions, task_queue, early, signer=signer, concurrency=concurrency, view=view, label="truoc"
        )
        failures |= await demo.rounds(
            client,
            sessions,
            task_queue,
            started,
            signer=signer,
            concurrency=concurrency,
            view=view,
            last_round=1,
            label="truoc-mo",
        )

        out.rule("[bold]6. The reform of 1 July 2025: 65 commune-level units, no districts")
        async with database(settings, url=settings.owner_asyncpg_url) as owner:
            with progress() as bar:
                task = bar.add_task("1672/NQ-UBTVQH15: households in flight to their new units", total=None)
                reformed = await demo.apply_reform(
                    client,
                    sessions,
                    owner,
                    task_queue,
                    settings.state_dir,
                    signer=signer,
                    on_progress=lambda p: bar.update(task, total=p.total or None, completed=p.finished),
                )
        _print_reform(reformed, settings)
        items = await demo.reload(sessions, items)
        first = next((h for h in items if h.district is None), items[0])  # a moved household

        out.rule("[bold]7. After the reform: the new communes' officers finish every file; tranches in batches")
        failures |= await demo.rounds(
            client, sessions, task_queue, items, signer=signer, concurrency=concurrency, view=view, label="sau"
        )
        for code, why in failures.items():
            err.print(f"[red]{code}[/]: {why}")

        out.rule("[bold]8. Cấp bù and co-financing")
        _print_extras(await demo.finance_extras(sessions, items))

        web_work = await demo.web_work(sessions, client, task_queue, settings.state_dir, first)
        out.print(
            f"left for the web app: {len(web_work.codes)} households at verification in {first.commune} "
            f"({', '.join(web_work.codes)})"
        )
        logins = await demo.logins(sessions, first, items, signer=signer)
        checked = await checks.run(settings, sessions, client)

        out.rule("[bold]9. After the money: receipts verified by sampling, a grievance, the settlement dossier")
        v = checked.verified
        async with stack_channel(settings) as channel:  # the stack's bank: a trace asks it for its statement
            after = await demo.after_the_money(
                sessions,
                items,
                settings.state_dir,
                channel=channel,
                verified=f"{len(v.discrepancies)} discrepancies over {v.transitions} steps, {v.households} households",
                checkpoint=f"witness checkpoint {checked.swept.checkpoint_seq or '-'} (signed, in witness/)",
            )
        for line in after.lines:
            out.print(line)
        for path in after.files:
            out.print(f"Excel: {path}")
    out.rule("[bold]10. Summary")
    _print_summary(settings, checked, first, logins)
    if failures or not checked.ok or not after.matches:
        raise typer.Exit(1)


class _Rounds:
    """The rounds as they run (operations.demo.RoundsView): a bar per round's steps and per payout batch."""

    @contextmanager
    def officers(self, round_no: int, households: int) -> Iterator[Callable[[str], None]]:
        with progress() as bar:
            task = bar.add_task(f"round {round_no}: officers' steps", total=households)
            yield lambda _: bar.advance(task)

    def stepped(self, round_no: int, result: demo.DriveResult) -> None:
        out.print(f"round {round_no}: {result.steps} steps taken; {result.closed} files closed")

    def batch(
        self, action: BatchAction, tranche: int, selection: BatchSelection
    ) -> AbstractContextManager[Callable[[BatchProgress], None]]:
        return batch_progress(action, tranche, selection)

    def batched(self, result: PayoutBatchResult) -> None:
        print_batch(result)

    def answered(self, payments: dict[str, int], unanswered: int) -> None:
        out.print(f"payment channel: {payments}" + (f"; {unanswered} not answered yet" if unanswered else ""))


def _print_reform(r: demo.Reformed, settings: Settings) -> None:
    what = "loaded" if r.loaded.new else "loaded before"
    out.print(f"gazetteer {r.loaded.version} {what}: {r.loaded.units} units ({', '.join(r.loaded.reorganisations)})")
    out.print(f"policy {r.policy}: the district's steps to the commune (its chairman) or the province")
    print_reorganisation(r.moved)
    p = r.moved.progress
    rate = p.done / r.seconds if r.seconds else 0
    out.print(f"moved {p.done} households in flight in {r.seconds:.1f} s ({rate:.1f} households/s)")
    print_handovers(r.handovers, r.moved.basis)
    xlsx = write_handover_xlsx(r.handovers, settings.state_dir / "reports" / "ban-giao-1672.xlsx", r.moved.basis)
    out.print(f"Excel: {xlsx}")
    if r.refused:
        code, user, refusal = r.refused
        out.print(f"{code}: accept as {user} (old district) → [yellow]{refusal.rule}[/]: {refusal.message}")


def _print_extras(extras: demo.Extras) -> None:
    t, new = extras.received
    again = "" if new else " — recorded before, nothing written"
    out.print(f"MTQG-GNBV received {dong(t.amount)} (second assignment){again}")
    paid_back, new = extras.reimbursed
    again = "" if new else " — recorded before, nothing written"
    out.print(
        "ADV-LOCBINH: "
        + (f"reimbursed {dong(paid_back.amount)} by MTQG-GNBV (cấp bù){again}" if paid_back else "nothing to reimburse")
    )
    out.print(f"VBSP loans recorded for {extras.loans} poor households (co-financing, not grant money)")


def _print_summary(settings: Settings, c: checks.Checks, first: Household, logins: list[demo.Login]) -> None:
    print_report(c.report)
    print_reconciliation(c.reconciliation)
    table = Table("check", "result", title="Checks")
    table.add_row(
        "paid per household = ledger posting = policy amount",
        "ok" if not c.mismatches else f"{len(c.mismatches)} mismatches",
    )
    table.add_row(
        "ledger: balanced, no source below zero, totals = transfers",
        "ok" if not c.ledger_problems else "; ".join(c.ledger_problems),
    )
    table.add_row(
        "audit chain",
        f"verified: {c.chain.rows} rows, {c.chain.households} households"
        if c.chain.ok
        else f"BROKEN at {c.chain.first_break}",
    )
    table.add_row(
        "list totals",
        f"{c.totals['new_builds']} new builds, {c.totals['repairs']} repairs, {dong(c.totals['paid'])} paid",
    )
    table.add_row(
        "reconciliation per source, district, decision",
        "balanced to the đồng" if c.reconciliation.balanced else f"{len(c.reconciliation.problems)} differences",
    )
    table.add_row("temporal workflow list --query \"Stage='closed'\"", f"{c.closed} workflows")
    table.add_row(
        "archive: closed histories copied out of Temporal",
        f"{c.swept.archived_now} copied in {c.sweep_seconds:.1f} s, {c.swept.already} before, {c.swept.waiting} "
        f"waiting; witness checkpoint {c.swept.checkpoint_seq or '-'} signed",
    )
    table.add_row(
        "audit verify: histories × audit log × ledger",
        f"{len(c.verified.discrepancies)} discrepancies over {c.verified.transitions} steps, "
        f"{c.verified.households} households",
    )
    out.print(table)
    for m in c.mismatches[:10]:
        err.print(f"[red]{m}[/]")
    example = first.code
    out.rule("[bold]Where to look next")
    out.print(f"Temporal Web UI:  {settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows")
    out.print('Environment:      eval "$(python starter.py stack env)"')
    out.print('                  then: temporal workflow list --query "Stage=\'closed\'"; psql "$DATABASE_URL"')
    out.print("Households:       python starter.py list --stage closed --district 'Lộc Bình'")
    out.print(f"One household:    python starter.py status {example}")
    out.print("Report:           python starter.py report [--json] [--csv DIR] [--xlsx FILE]")
    out.print(f"Excel:            {c.xlsx}")
    out.print("Funds:            python starter.py finance sources")
    out.print(f"Audit:            python starter.py audit timeline {example} --lang en")
    out.print("Archive:          python starter.py archive status (retention, archived, waiting)")
    out.print("                  python starter.py audit export DIR, then audit replay / verify --from DIR")
    web = Stack(settings).web()
    out.print(f"Web app:          {web.url}  (API: {web.url}/docs)")
    if logins:
        table = Table("who", "user", "password (new on every demo run)", "what they do", title="Sign in as")
        for login in logins:
            table.add_row(login.kind, login.user, login.password, login.does)
        out.print(table)
    out.print("Stop everything:  python starter.py stack down")
