"""`starter.py report`: households by district, stage and decision, and the reconciliation per source,
district and decision; and their printing, which the demo's summary shares."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cli.command import command, database, err, fail, out
from core.formatting import amount
from core.settings import Settings
from operations import reconciliation, reports

app = typer.Typer()


@app.command("report")
@command
async def report(
    settings: Settings,
    as_json: bool = typer.Option(False, "--json"),
    csv_dir: Path | None = typer.Option(None, "--csv", help="Write the reconciliation tables as CSV files here"),
    xlsx: Path | None = typer.Option(None, "--xlsx", help="Write the reconciliation as an Excel workbook"),
    map_: str = typer.Option(
        "old", "--map", help="Households by 'old' district (before 1 July 2025) or by 'new' commune (from then on)"
    ),
) -> None:
    """Households by unit and stage, and the reconciliation per source, old district, new commune and decision
    (received, reserved, released, paid, free), checked against the ledger. Exit 1 if it does not balance."""
    if map_ not in ("old", "new"):
        fail(f"--map {map_!r}: 'old' (districts before 1 July 2025) or 'new' (communes from then on)")
    async with database(settings) as sessions, sessions() as session:
        rep = await reports.build(session, new_map=map_ == "new")
        rec = await reconciliation.reconcile(session)
    written = (reconciliation.write_csv(rec, csv_dir) if csv_dir else []) + (
        [reconciliation.write_xlsx(rec, xlsx)] if xlsx else []
    )
    if as_json:
        print(json.dumps(rep.as_json() | {"reconciliation": rec.as_json()}, ensure_ascii=False, indent=2))
    else:
        print_report(rep, new_map=map_ == "new")
        print_reconciliation(rec)
    for path in written:
        err.print(f"wrote {path}")
    if not rec.balanced:
        raise typer.Exit(1)


def _cell(v: object) -> str:
    if isinstance(v, bool):
        return "có" if v else "không"
    return amount(v) if isinstance(v, int) else str(v)


def print_reconciliation(rec: reconciliation.Reconciliation) -> None:
    for title, header, body in reconciliation.sheets(rec):
        if not body:
            continue
        if title == "Theo nguồn":  # the names are long; `finance sources` and the Excel export carry them
            header, body = header[:1] + header[2:], [row[:1] + row[2:] for row in body]
        table = Table(*header, title=f"Đối chiếu — {title}")
        for row in body:
            if isinstance(row[0], str) and (row[0].startswith("Cộng") or row[0] == "Tổng cộng"):
                table.add_section()
            table.add_row(*[_cell(v) for v in row])
        out.print(table)
    if rec.balanced:
        out.print(
            "[green]reconciliation: balanced to the đồng[/] — every figure is the sum of its ledger entries, "
            "matches the account balances, the households' read model and the other views"
        )
    else:
        for p in rec.problems:
            err.print(f"[red]reconciliation: {p}[/]")


def print_report(rep: reports.Report, *, new_map: bool = False) -> None:
    table = Table(
        "commune (from 01/07/2025)" if new_map else "district (before 01/07/2025)",
        "stage",
        "households",
        "new builds",
        "repairs",
        "reserved (đ)",
        "paid (đ)",
        title="Households by commune and stage" if new_map else "Households by district and stage",
    )
    for r in rep.by_district_stage:
        table.add_row(
            r.district,
            r.stage,
            str(r.households),
            str(r.new_builds),
            str(r.repairs),
            amount(r.reserved),
            amount(r.paid),
        )
    totals = rep.as_json()["totals"]
    table.add_section()
    table.add_row(
        "[bold]total",
        "",
        str(totals["households"]),
        str(totals["new_builds"]),
        str(totals["repairs"]),
        amount(totals["reserved"]),
        amount(totals["paid"]),
    )
    out.print(table)
    table = Table(
        "decision",
        "households",
        "new builds",
        "repairs",
        "entitled (đ)",
        "reserved (đ)",
        "paid (đ)",
        title="Households by approving decision",
    )
    for d in rep.by_decision:
        table.add_row(
            d.decision_ref,
            amount(d.households),
            amount(d.new_builds),
            amount(d.repairs),
            amount(d.entitled),
            amount(d.reserved),
            amount(d.paid),
        )
    out.print(table)
