"""What the history archive costs on a running stack: a sweep that copies histories, a sweep with nothing
to copy (what every ARCHIVE_INTERVAL_SECONDS costs once the files are archived), and a witness checkpoint.

    make demo                                  # the stack up, the households closed; the demo's summary
                                               #   sweeps once and prints how long copying them took
    python -m bench.archive_sweep              # times the parts below on the stack the settings name

Measured, in order:
  1. `backlog`: visibility's list of every closed household and batch run, and the archive's signed rows
     for them (each signature verified): the fixed cost of every sweep;
  2. a sweep through the worker (`HistoryArchiveWorkflow`, as the schedule runs it), copying whatever waits
     (fetched from Temporal, signed, written), with its histories/s when it copied any;
  3. a second sweep, with nothing left to copy: what every ARCHIVE_INTERVAL_SECONDS costs from then on;
  4. the witness's checkpoint, computed and signed (forced): its time and its body's size.
Prints a table and writes the figures as JSON into bench/results/.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from archive.source import open_archive
from archive.store import PostgresArchive
from archive.sweep import backlog
from archive.witness import load_witness
from archive.workflow import HistoryArchiveWorkflow
from bench.replay_throughput import cpu_model
from core.client import connect
from core.settings import get_settings
from db.engine import make_engine, make_sessions
from models.archive import ArchiveSweepInput

HERE = Path(__file__).parent


async def main() -> None:
    settings = get_settings()
    client = await connect(settings, keys_required=False)
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    archive = open_archive(sessions, settings)
    figures: dict = {"machine": cpu_model(), "at": datetime.now(UTC).isoformat(timespec="seconds")}

    started = time.perf_counter()
    found = await backlog(client, archive)
    figures["backlog_s"] = round(time.perf_counter() - started, 3)
    figures["closed_in_temporal"], figures["waiting_before"] = len(found.closed), len(found.missing)

    for label in ("sweep", "sweep_again"):
        started = time.perf_counter()
        got = await client.execute_workflow(
            HistoryArchiveWorkflow.run,
            ArchiveSweepInput(checkpoint=False),
            id=f"bench-archive-{uuid.uuid4().hex[:8]}",
            task_queue=settings.temporal_task_queue,
            execution_timeout=timedelta(minutes=30),
        )
        seconds = time.perf_counter() - started
        figures[f"{label}_s"] = round(seconds, 3)
        figures[f"{label}_archived"] = got.archived_now
        if got.archived_now:
            figures[f"{label}_per_s"] = round(got.archived_now / seconds, 1)

    witness = load_witness(settings, sessions, PostgresArchive(sessions))
    if witness is not None:
        started = time.perf_counter()
        cp = await witness.checkpoint(force=True)
        figures["checkpoint_s"] = round(time.perf_counter() - started, 3)
        if cp is not None:
            figures["checkpoint_seq"] = cp.seq
            figures["checkpoint_body_bytes"] = len(json.dumps(cp.body, separators=(",", ":")))
            figures["households_in_chains"] = cp.body.get("chains", {}).get("households")
    await engine.dispose()

    table = Table("figure", "value", title="History archive")
    for k, v in figures.items():
        table.add_row(k, str(v))
    Console().print(table)
    out = HERE / "results" / f"archive-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(figures, indent=1) + "\n")
    Console().print(f"written to {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    asyncio.run(main())
