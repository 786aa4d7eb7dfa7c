"""Importing an approved list: all rows or none, then one workflow per household.

Re-importing a list is safe: households already registered with the same data are skipped and their
workflows started only if missing (the workflow id is derived from the household code). A household
code or CCCD already registered with different data is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.errors import Refusal
from core.formatting import day, today
from core.signing import SigningRing
from db import finance as finance_db
from db import gazetteer as gazetteer_db
from db import households, policy, users
from db.engine import Sessions
from models.assertion import digest_of
from models.household import Household
from models.policy import WorkflowPolicy
from models.state import HouseholdWorkflowInput
from operations import registry
from operations.csv_list import ParsedRow, Problem, parse
from workflows import search_attributes
from workflows.household import HouseholdWorkflow

log = structlog.get_logger(__name__)


class ImportRejected(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the list")
        self.problems = problems


@dataclass
class ImportReport:
    batch_id: int | None
    rows: int
    registered: int
    unchanged: int
    workflows_started: int
    workflows_existing: int
    codes: list[str] = field(default_factory=list)
    # Who imported each household's list (this import for the new ones, the first for those registered
    # before): the workflow is told, since the policy may forbid the importer to approve.
    importers: dict[str, str] = field(default_factory=dict)

    def describe(self, file_name: str) -> str:
        return (
            f"{file_name}: {self.rows} households — {self.registered} registered, {self.unchanged} already "
            f"registered; workflows {self.workflows_started} started, {self.workflows_existing} existing"
        )


def _differences(a: Household, b: Household) -> list[str]:
    return [name for name in Household.model_fields if getattr(a, name) != getattr(b, name)]


async def _units_in_force(session, rows: list[ParsedRow]) -> list[Problem]:
    """With a gazetteer loaded, each new row's commune must exist today (a list names the units of its day: one
    naming a commune a reorganisation ended is refused, with the unit that succeeded it)."""
    g = await gazetteer_db.stored(session)
    if g is None:
        return []
    on = today()
    out = []
    for row in rows:
        h = row.household
        if g.unit_at(h.district, h.commune, on) is not None:
            continue
        where = " / ".join(p for p in (h.district, h.commune) if p)
        ended = next(
            (
                (r, found)
                for r in sorted(g.reorganisations, key=lambda r: r.effective, reverse=True)
                if (found := g.successor(r.basis, h.district, h.commune, h.code)) is not None
            ),
            None,
        )
        if ended:
            r, (old, new) = ended
            why = f"{where} ceased to exist on {day(r.effective)} under {r.basis}: it is {new.name} now"
        else:
            why = f"{where} is not a unit of the gazetteer {g.version} on {day(on)}"
        out.append(Problem(row.line, "commune", why))
    return out


# What an import's assertion names as its workflow and step: a list is not one household's.
IMPORTS = "imports"
IMPORT_STEP = "import_list"


def import_digest(*, file_name: str, file_sha256: str, row_count: int, imported_by: str) -> str:
    """What an import batch's assertion covers: the file (by name and SHA-256), the households it registered
    and who imported it; recomputed from the batch's row, it checks the row was written by a front door."""
    return digest_of(
        {"file_name": file_name, "file_sha256": file_sha256, "row_count": row_count, "imported_by": imported_by}
    )


async def register(
    sessions: Sessions,
    data: bytes,
    file_name: str,
    user_id: str,
    *,
    signer: SigningRing | Callable[[], SigningRing] | None = None,
    match_key: bytes | None = None,
) -> tuple[ImportReport, list[Household], WorkflowPolicy]:
    """Validate the whole list and write it in one transaction; refuse it whole on any problem. With
    `signer` (the front door's ring, or what loads it once the list is found good) the batch carries the
    front door's assertion that `user_id` imported exactly this file. With `match_key` (MATCH_KEY_PATH) each
    household's keyed CCCD hash is stored in the same transaction, so approval finds it on another
    programme's list (db.registry.open_matches)."""
    rows, problems = parse(data, file_name)
    if problems:
        raise ImportRejected(problems)
    async with sessions() as session, session.begin():
        # Lists are registered one at a time: a second import of the same list waits, then finds its rows
        # registered (unchanged), instead of failing on the primary key half-way through its own insert.
        await households.lock_registry(session)
        actor = await users.require_actor(session, user_id)
        current = await policy.policy_today(session)
        if actor.role not in current.import_roles:
            raise Refusal("RoleNotAllowed", f"role {actor.role!r} may not import lists (policy {current.version})")
        by_code, by_cccd = await households.existing(
            session, [r.household.code for r in rows], [r.household.cccd for r in rows]
        )
        new: list[ParsedRow] = []
        unchanged: list[ParsedRow] = []
        for row in rows:
            h = row.household
            if not actor.jurisdiction.covers(h):
                problems.append(
                    Problem(row.line, "district", f"outside the importer's jurisdiction ({actor.jurisdiction})")
                )
            elif h.code in by_code:
                diff = _differences(by_code[h.code], h)
                if diff:
                    problems.append(
                        Problem(row.line, "code", f"{h.code} is already registered with different {', '.join(diff)}")
                    )
                else:
                    unchanged.append(row)
            elif h.cccd in by_cccd:
                problems.append(
                    Problem(row.line, "cccd", f"{h.cccd} is already registered to household {by_cccd[h.cccd]}")
                )
            else:
                new.append(row)
        problems += await _units_in_force(session, new)
        if problems:
            raise ImportRejected(problems)
        batch_id = None
        if new:
            await finance_db.ensure_decisions(session, {r.household.decision_ref for r in new})
            batch = dict(
                file_name=file_name,
                file_sha256=hashlib.sha256(data).hexdigest(),
                row_count=len(new),
                imported_by=actor.user_id,
            )
            assertion = None
            if signer is not None:
                ring = signer if isinstance(signer, SigningRing) else signer()
                assertion = ring.sign(
                    workflow_id=IMPORTS, step=IMPORT_STEP, input_digest=import_digest(**batch), user_id=actor.user_id
                ).model_dump(mode="json")
            batch_id = await households.add_import_batch(session, **batch, assertion=assertion)
            await households.insert_many(session, [r.household for r in new], batch_id)
        if match_key is not None:
            await registry.key_households(session, match_key, [(r.household.code, r.household.cccd) for r in rows])
        importers = await households.importers(session, [r.household.code for r in rows])
    report = ImportReport(
        batch_id=batch_id,
        rows=len(rows),
        registered=len(new),
        unchanged=len(unchanged),
        workflows_started=0,
        workflows_existing=0,
        codes=[r.household.code for r in rows],
        importers=importers,
    )
    return report, [r.household for r in rows], current


# A run under a household's id that ended this way, while the register holds no step of it, is not the
# engine's: someone who reached Temporal started it first (with input the engine refused, so it failed), to
# leave the household without a workflow. The import starts the household's own run in its place.
NOT_OURS = {
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
    WorkflowExecutionStatus.CANCELED,
}


async def start_workflows(
    client: Client,
    task_queue: str,
    items: list[Household],
    current: WorkflowPolicy,
    concurrency: int = 32,
    *,
    importers: Mapping[str, str] | None = None,
    sessions: Sessions | None = None,
) -> tuple[int, int]:
    """Start one workflow per household unless it exists (running or closed), telling it who imported its list
    (`importers`, by code: `ImportReport.importers`). With `sessions`, an ended run under the household's id
    while the register shows no step taken (see NOT_OURS) is replaced by the household's own. Returns
    (started, existing)."""
    gate = asyncio.Semaphore(concurrency)

    async def start(h: Household, reuse=WorkflowIDReusePolicy.REJECT_DUPLICATE) -> bool:
        await client.start_workflow(
            HouseholdWorkflow.run,
            HouseholdWorkflowInput(household=h, policy=current, imported_by=(importers or {}).get(h.code)),
            id=h.workflow_id,
            task_queue=task_queue,
            id_reuse_policy=reuse,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=search_attributes.at_start(h),
        )
        return True

    async def one(h: Household) -> bool:
        async with gate:
            try:
                return await start(h)
            except WorkflowAlreadyStartedError:
                if sessions is None or not await _squatted(client, sessions, h):
                    return False
                log.warning("squatted_workflow_replaced", household=h.code)
                return await start(h, WorkflowIDReusePolicy.ALLOW_DUPLICATE)

    results = await asyncio.gather(*(one(h) for h in items))
    started = sum(results)
    return started, len(results) - started


async def _squatted(client: Client, sessions: Sessions, h: Household) -> bool:
    described = await client.get_workflow_handle(h.workflow_id).describe()
    if described.status not in NOT_OURS:
        return False
    async with sessions() as session:
        row = await households.get(session, h.code)
    return row is not None and row.last_seq == 0


async def import_file(
    sessions: Sessions,
    client: Client,
    task_queue: str,
    path: Path,
    user_id: str,
    *,
    signer: SigningRing | Callable[[], SigningRing] | None = None,
    match_key: bytes | None = None,
) -> ImportReport:
    """Register the list (signed by `signer`, see `register`), then start its workflows. The client is first
    used after registration, so with a lazy client a bad file is reported whatever the state of the workflow
    servers."""
    data = path.read_bytes()
    report, items, current = await register(sessions, data, path.name, user_id, signer=signer, match_key=match_key)
    report.workflows_started, report.workflows_existing = await start_workflows(
        client, task_queue, items, current, importers=report.importers, sessions=sessions
    )
    return report
