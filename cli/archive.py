"""`starter.py archive …`: the history archive, for the engineer on call and the auditors.

archive status        retention, histories archived, closed histories still waiting, the last checkpoint
archive sweep         archive every closed history now (the worker's schedule does it every few minutes)
"""

from __future__ import annotations

from datetime import timedelta

import typer
from rich.table import Table

from archive.schedule import SCHEDULE_ID, ArchiveStatus, archive_status
from archive.source import open_archive
from archive.workflow import HistoryArchiveWorkflow
from cli.command import command, database, err, fail, out
from core.client import connect
from core.formatting import days, moment
from core.settings import Settings
from models.archive import ArchiveSweepInput

app = typer.Typer(no_args_is_help=True, help="The history archive: status, and a sweep now")


def status_rows(s: ArchiveStatus) -> list[tuple[str, str]]:
    """The archive's lines, for `archive status` and `stack status`."""
    latest = f", latest {moment(s.counts.latest)}" if s.counts.latest else ""
    return [
        ("Retention", f"{days(s.retention)} (Temporal keeps a closed history this long)"),
        (
            "Archive",
            f"{s.counts.histories} closed histories archived ({s.counts.households} households, "
            f"{s.counts.batches} payout batches){latest}",
        ),
        (
            "Waiting",
            f"{s.waiting} of the {s.closed_in_temporal} closed histories Temporal holds are not "
            "archived yet"
            + (f", the oldest closed {moment(s.oldest_waiting)}" if s.oldest_waiting else "")
            + (" — AT RISK: more than half the retention; is a worker running the sweep?" if s.at_risk else ""),
        ),
    ]


async def read_status(settings: Settings) -> ArchiveStatus:
    client = await connect(settings, keys_required=False)
    async with database(settings) as sessions:
        return await archive_status(client, open_archive(sessions, settings), settings.temporal_namespace)


def print_status(got: ArchiveStatus) -> None:
    table = Table(show_header=False)
    for name, value in status_rows(got):
        table.add_row(name, value)
    out.print(table)


@app.command("status")
@command
async def status(settings: Settings) -> None:
    """Retention, how many closed histories are archived and how many wait. Exit 1 when one has waited more
    than half the retention (the sweep is not keeping up, or no worker runs it)."""
    got = await read_status(settings)
    print_status(got)
    if got.at_risk:
        raise typer.Exit(1)


@app.command("sweep")
@command
async def sweep(settings: Settings) -> None:
    """Archive every closed history now, through the worker (as its schedule does), then sign a checkpoint."""
    try:
        client = await connect(settings, keys_required=False)
        got = await client.execute_workflow(
            HistoryArchiveWorkflow.run,
            ArchiveSweepInput(),
            id=f"{SCHEDULE_ID}-now",
            task_queue=settings.temporal_task_queue,
            execution_timeout=timedelta(minutes=30),
        )
    except Exception as e:  # noqa: BLE001 (the worker is down, or the sweep failed: say which)
        fail(f"the sweep did not finish: {type(e).__name__}: {e}")
    checkpoint = f"; checkpoint {got.checkpoint_seq} signed" if got.checkpoint_seq else ""
    out.print(
        f"archived {got.archived_now} histories ({got.already} were already); {got.waiting} still waiting "
        f"of {got.closed_seen} closed{checkpoint}"
    )
    for failure in got.failed:
        err.print(f"[bold red]not archived[/] {failure}")
    if got.failed:
        raise typer.Exit(1)
