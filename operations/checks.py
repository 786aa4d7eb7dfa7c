"""The programme's checks end to end, as the demo ends with them (operations/demo.py): paid per household =
ledger posting = policy amount; the ledger's invariants; the audit log's hash chains; the reconciliation per
source, district and decision; the closed histories archived (and the witness's checkpoint signed over them);
the three-way check of histories, audit log and ledger. The command line shows them (cli/demo.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client

from archive.schedule import SCHEDULE_ID
from archive.workflow import HistoryArchiveWorkflow
from auditor.live import verify_live
from auditor.verify import VerifyReport
from core.settings import Settings
from db import audit, ledger
from db.engine import Sessions
from models.archive import ArchiveSweepInput, ArchiveSweepResult
from operations import reconciliation, reports


@dataclass
class Checks:
    report: reports.Report
    reconciliation: reconciliation.Reconciliation
    mismatches: list[str]  # households whose paid amount is not the ledger's posting or the policy's amount
    ledger_problems: list[str]
    chain: audit.ChainReport
    totals: dict[str, int]  # the list's new builds, repairs and đồng paid
    xlsx: Path  # the reconciliation as an Excel workbook
    closed: int  # workflows Temporal lists as closed (Stage='closed')
    swept: ArchiveSweepResult
    sweep_seconds: float
    verified: VerifyReport

    @property
    def ok(self) -> bool:
        return not (
            self.mismatches
            or self.ledger_problems
            or not self.chain.ok
            or not self.reconciliation.balanced
            or not self.verified.ok
        )


async def run(settings: Settings, sessions: Sessions, client: Client, *, sweep_id: str = "demo") -> Checks:
    """Every check, the reconciliation written to reconciliation.xlsx in the state folder. The closed files are
    archived now (the worker's schedule would within ARCHIVE_INTERVAL_SECONDS) under the sweep run
    `{SCHEDULE_ID}-{sweep_id}`, so that the three-way check reads the chains against the witness's checkpoint."""
    async with sessions() as session:
        rep = await reports.build(session)
        rec = await reconciliation.reconcile(session)
        mismatches = await reports.reconcile_households(session)
        ledger_problems = await ledger.check_invariants(session)
        chain = await audit.verify_chain(session)
        totals = await reports.support_totals(session)
    xlsx = reconciliation.write_xlsx(rec, settings.state_dir / "reconciliation.xlsx")
    closed = await client.count_workflows("Stage='closed'")
    started = time.perf_counter()
    swept = await client.execute_workflow(
        HistoryArchiveWorkflow.run,
        ArchiveSweepInput(),
        id=f"{SCHEDULE_ID}-{sweep_id}",
        task_queue=settings.temporal_task_queue,
        execution_timeout=timedelta(minutes=30),
    )
    sweep_seconds = time.perf_counter() - started
    verified, _ = await verify_live(client, sessions, settings, client.data_converter)
    return Checks(
        rep, rec, mismatches, ledger_problems, chain, totals, xlsx, closed.count, swept, sweep_seconds, verified
    )
