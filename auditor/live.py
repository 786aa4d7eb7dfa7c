"""The three-way check on the live records, as `audit verify`, the auditors' page and the demo run it: the
histories (Temporal's, else the archive's), the audit log and the ledger; the chains and the archive against
the witness's latest checkpoint; the archive's rows the witness did not sign; and the households whose
history is in neither place (or that no list imported)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from temporalio.client import Client
from temporalio.converter import DataConverter

from archive.source import HOUSEHOLDS, Histories, open_archive
from archive.witness import check_witness
from auditor.history import Trail, read_trails
from auditor.records import household_workflow_ids, read_records
from auditor.verify import VerifyReport, verify
from core.settings import Settings
from db import households
from db.engine import Sessions

Finding = tuple[str, str, str, str]  # kind, household, where, detail


async def verify_live(
    client: Client,
    sessions: Sessions,
    settings: Settings,
    converter: DataConverter,
    codes: Sequence[str] | None = None,
    *,
    on_total: Callable[[int], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> tuple[VerifyReport, Histories]:
    """The report, and the source the histories came from (how many from the archive)."""
    live = Histories(client, open_archive(sessions, settings))
    ids = household_workflow_ids(codes) if codes else await live.ids(HOUSEHOLDS)
    if on_total:
        on_total(len(ids))
    trails = await read_trails(live.each(ids, on_done=on_done), converter)
    # The chains and the archive against the latest signed checkpoint, with the public key from its file
    # (never from the database): a consistent rewrite of the chains is caught here.
    witnessed = await check_witness(
        sessions, live.archive, public_keys=settings.witness_public_key_path, published=settings.witness_path
    )
    found: list[Finding] = list(witnessed)
    found += await no_history(sessions, codes, trails)
    for row in await live.archive.unsigned():  # planted, or archived before the witness signed
        said = f"{row.workflow_id} run {row.run_id}: not signed by the witness; not read"
        found.append(("archive_row_unsigned", row.household_code or "-", f"archive seq {row.seq}", said))
    if codes:
        found = [f for f in found if f[1] in codes or f[1] == "-"]
    return verify(trails, await read_records(sessions, codes), witness=found), live


async def no_history(sessions: Sessions, codes: Sequence[str] | None, trails: list[Trail]) -> list[Finding]:
    """Households asked for (or, with none asked for, every registered one) whose history is neither on the
    Temporal server nor in the archive, named as such; a code no list ever imported, as unknown."""
    seen = {t.household_code for t in trails if t.workflow_type == "HouseholdWorkflow"}
    async with sessions() as session:
        registered = await households.registered(session, list(codes) if codes else None)
    found = [
        (
            "history_missing",
            code,
            f"household {code}",
            "registered, but its workflow history is neither on the Temporal server nor in the archive",
        )
        for code in sorted(registered - seen)
    ]
    found += [
        ("unknown_household", code, f"household {code}", "no imported list holds this code")
        for code in sorted(set(codes or ()) - registered)
    ]
    return found
