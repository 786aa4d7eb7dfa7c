"""The 2025 reform of local government, as a provincial administrator applies it: the gazetteer loaded, the
two-tier policy published, the reorganisation applied to every household in flight (one signed batch), and
the district-held money handed to its successors with the handover record (biên bản bàn giao).

Whatever the front door (command line, demo), this is the one way each of these is done."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from core import signing
from core.cells import append_row
from core.errors import Refusal
from core.formatting import dong, today
from db import finance as finance_db
from db import gazetteer as gazetteer_db
from db import ledger, users
from db import policy as policy_db
from db.engine import Sessions
from models.finance import BatchProgress
from models.gazetteer import Gazetteer
from models.policy import StepRule, WorkflowPolicy
from models.reorganisation import (
    REORGANISE_STEP,
    ReorganiseInput,
    ReorganiseResult,
    ReorganiseRun,
    reorganisation_workflow_id,
)
from operations.payouts import follow
from operations.policies import add_version
from workflows.reorganisation import ReorganisationWorkflow

# --------------------------------------------------------------------------------------------- the gazetteer


@dataclass(frozen=True)
class Loaded:
    version: str
    sha256: str
    units: int
    reorganisations: list[str]
    new: bool  # False: this very file was loaded before; nothing written


def read_gazetteer(path: Path) -> tuple[Gazetteer, str]:
    """The file as a checked gazetteer, with its SHA-256; refused whole (naming the field or the rule)."""
    data = path.read_bytes()
    try:
        g = Gazetteer.model_validate_json(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Refusal("InvalidGazetteer", f"{path.name}: {where}: {first['msg']}") from None
    g.check()
    return g, hashlib.sha256(data).hexdigest()


async def load_gazetteer(owner: Sessions, path: Path, user_id: str) -> Loaded:
    """Store the gazetteer in `path` (checked whole first) as its version, by `user_id`, a policy admin whom the
    front door authenticated. `owner`: the schema owner's sessions (the application's login only reads it)."""
    g, digest = read_gazetteer(path)
    async with owner() as session, session.begin():
        actor = await users.require_actor(session, user_id)
        if actor.role not in (await policy_db.policy_today(session)).policy_admin_roles:
            raise Refusal("RoleNotAllowed", f"role {actor.role!r} may not load a gazetteer")
        stored = await gazetteer_db.version_digest(session, g.version)
        if stored == digest:
            return Loaded(g.version, digest, len(g.units), [r.basis for r in g.reorganisations], False)
        if stored is not None:
            raise Refusal(
                "GazetteerChanged", f"gazetteer {g.version} is loaded with other contents; versions are never edited"
            )
        await gazetteer_db.insert_version(session, g, digest, actor.user_id)
    return Loaded(g.version, digest, len(g.units), [r.basis for r in g.reorganisations], True)


# ------------------------------------------------------------------------------------------ the two-tier policy

TWO_TIER_VERSION = "2026.7-hai-cap"  # the policy version the moved households run under (`reform apply`)
DISTRICT_ROLE, COMMUNE_ROLE, PROVINCE_ROLE = "district_officer", "commune_officer", "province_officer"


def two_tier(current: WorkflowPolicy, version: str) -> WorkflowPolicy:
    """The policy from the reform on: every step the district took (approve, accept, cancel, sending back) goes
    to the commune (its chairman) or the province, and its reminders to the commune's People's Committee."""

    def moved(rule: StepRule) -> StepRule:
        if DISTRICT_ROLE not in rule.roles:
            return rule
        roles = [r for r in rule.roles if r != DISTRICT_ROLE]
        roles += [r for r in (COMMUNE_ROLE, PROVINCE_ROLE) if r not in roles]
        agency = rule.responsible_agency.replace("cấp huyện", "cấp xã").replace("huyện", "xã")
        return rule.model_copy(update={"roles": roles, "responsible_agency": agency})

    return current.model_copy(
        update={
            "version": version,
            "steps": {step: moved(rule) for step, rule in current.steps.items()},
            "decision_roles": [r for r in current.decision_roles if r != DISTRICT_ROLE] or current.decision_roles,
        }
    )


async def publish_two_tier(owner: Sessions, version: str, user_id: str) -> WorkflowPolicy:
    """Publish (once) the two-tier version of today's policy, in force from today."""
    async with owner() as session:
        existing = await policy_db.stored_workflow_policy(session, version)
        current = await policy_db.policy_today(session)
    if existing is not None:
        return existing
    new = two_tier(current, version)
    await add_version(owner, new, today(), user_id)
    return new


# ------------------------------------------------------------------------------------ applying a reorganisation


def reorganisation_batch_id(basis: str, policy_version: str) -> str:
    """The same reorganisation under the same policy is the same batch: started again, it rejoins or re-runs."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in basis).strip("-")
    return f"{slug}-{policy_version}"


async def start_reorganisation(
    client: Client,
    sessions: Sessions,
    task_queue: str,
    signer: signing.SigningRing,
    user_id: str,
    *,
    basis: str,
    policy_version: str,
    concurrency: int = 16,
):
    """Sign reorganisation `basis` for `user_id` (whom the front door authenticated) and start (or rejoin) its
    workflow; returns its handle. The workflow's activities decide (signature, admin, reorganisation, policy)."""
    async with sessions() as session:
        actor = await users.require_actor(session, user_id)
        # Said here so the administrator hears it at once; the batch's first activity decides it again.
        if actor.role not in (await policy_db.policy_today(session)).policy_admin_roles:
            raise Refusal("RoleNotAllowed", f"role {actor.role!r} may not apply a reorganisation")
        if await gazetteer_db.reorganisation(session, basis) is None:
            raise Refusal("UnknownReorganisation", f"no reorganisation {basis!r} is loaded ('reform load')")
    try:
        inp = ReorganiseInput(
            batch_id=reorganisation_batch_id(basis, policy_version),
            basis=basis,
            policy_version=policy_version,
            actor=actor,
            evidence=[basis],
            concurrency=concurrency,
        )
    except ValidationError as err:
        raise Refusal("InvalidInput", str(err)) from None
    signed = signing.sign_input(
        signer,
        inp,
        workflow_id=reorganisation_workflow_id(inp.batch_id),
        step=REORGANISE_STEP,
        user_id=actor.user_id,
        ttl=signing.BATCH_TTL,
    )
    return await client.start_workflow(
        ReorganisationWorkflow.run,
        ReorganiseRun(batch=signed),
        id=reorganisation_workflow_id(inp.batch_id),
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def apply_reorganisation(
    client: Client,
    sessions: Sessions,
    task_queue: str,
    signer: signing.SigningRing,
    user_id: str,
    *,
    basis: str,
    policy_version: str,
    concurrency: int = 16,
    on_progress: Callable[[BatchProgress], None] | None = None,
    poll: float = 0.5,
) -> ReorganiseResult:
    """Apply reorganisation `basis` to every household of the province in flight, as `user_id` (whom the front
    door authenticated), signed with its ring; each moved household runs under `policy_version` from then on."""
    handle = await start_reorganisation(
        client,
        sessions,
        task_queue,
        signer,
        user_id,
        basis=basis,
        policy_version=policy_version,
        concurrency=concurrency,
    )
    return await follow(handle, ReorganisationWorkflow.progress, on_progress, poll=poll)


# --------------------------------------------------------------------------------------- the money handed over


@dataclass(frozen=True)
class Handover:
    """A district-held source's biên bản bàn giao: what it received, what is reserved for households and what
    was paid, what cấp bù paid back and is still owed (to the successor now), the free money handed over."""

    source: str
    from_unit: str
    to_unit: str
    to_source: str
    received: int
    reserved: int
    paid: int
    reimbursed: int
    handed_over: int
    receivable: int
    transfer_id: int | None
    findings: list[str]
    new: bool


async def hand_over(sessions: Sessions, user_id: str, *, basis: str) -> list[Handover]:
    """Hand every source held by a district that `basis` ends to the district's successor: its free balance by
    one balanced ledger transfer to the successor's source (the province's budget: letter 6606/BTC-QLCS), and
    the record of what was received, reserved, paid and is receivable, with the open findings. Once per source
    and reorganisation (a unique key): run again, it hands back the records it made."""
    out: list[Handover] = []
    async with sessions() as session, session.begin():
        actor = await users.require_actor(session, user_id)
        today_policy = await policy_db.policy_today(session)
        if actor.role not in today_policy.finance_roles and actor.role not in today_policy.policy_admin_roles:
            raise Refusal("RoleNotAllowed", f"role {actor.role!r} may not sign a handover of district funds")
        g = await gazetteer_db.stored(session)
        if g is None:
            raise Refusal("UnknownReorganisation", "no gazetteer is loaded ('reform load')")
        reorg = g.reorganisation(basis)
        ended = {s.from_unit: s.to_unit for s in reorg.successions}
        districts = {u.name: u for u in g.units if u.level.value == "district" and u.code in ended}
        rows = {r.code: r for r in await finance_db.source_rows(session)}
        # The district-held sources' accounts locked first: no allocation or void moves their money meanwhile.
        held = [r.account_id for r in rows.values() if any(d in districts for d in r.rules.districts)]
        await finance_db.lock_free_balances(session, held)
        balances = {b.code: b for b in await ledger.source_balances(session)}
        owed = {r.advance_source: r for r in await finance_db.receivables(session)}
        provincial = [code for code, b in balances.items() if b.category == "provincial_budget"]
        for code, row in sorted(rows.items()):
            held_by = [districts[d] for d in row.rules.districts if d in districts]
            if not held_by:
                continue
            if len(provincial) != 1:
                raise Refusal(
                    "NoSuccessorSource", f"the province has {len(provincial)} budget sources; one takes the handover"
                )
            unit, to_source = held_by[0], provincial[0]
            if done := await gazetteer_db.handover(session, basis, code):
                out.append(_handover(done, new=False))
                continue
            b = balances[code]
            receivable = owed[code].outstanding if code in owed else 0
            reimbursed = owed[code].reimbursed if code in owed else 0
            free = b.free
            findings = []
            if b.reserved:
                findings.append(
                    f"{dong(b.reserved)} đang giữ chỗ cho hộ vẫn ở nguồn {code}; đơn vị kế thừa chi tiếp hoặc giải tỏa"
                )
            if receivable:
                findings.append(f"cấp bù {dong(receivable)} còn phải trả cho {unit.name}: nay trả cho đơn vị kế thừa")
            transfer = None
            if free > 0:
                transfer = await ledger.hand_over(
                    session,
                    key=f"handover:{basis}:{code}",
                    source=code,
                    to_source=to_source,
                    amount=free,
                    memo=f"bàn giao {code} ({unit.name}) theo {basis} ({actor.user_id})",
                )
            done = await gazetteer_db.add_handover(
                session,
                idempotency_key=f"handover:{basis}:{code}",
                basis=basis,
                source=code,
                from_unit=unit.code,
                to_unit=ended[unit.code],
                to_source=to_source,
                received=b.received,
                reserved=b.reserved,
                paid=b.posted,
                reimbursed=reimbursed,
                handed_over=max(free, 0),
                receivable=receivable,
                transfer_id=transfer.id if transfer else None,
                findings=findings,
                recorded_by=actor.user_id,
            )
            out.append(_handover(done, new=True))
    return out


def _handover(row, *, new: bool) -> Handover:
    return Handover(
        source=row.source,
        from_unit=row.from_unit,
        to_unit=row.to_unit,
        to_source=row.to_source,
        received=row.received,
        reserved=row.reserved,
        paid=row.paid,
        reimbursed=row.reimbursed,
        handed_over=row.handed_over,
        receivable=row.receivable,
        transfer_id=row.transfer_id,
        findings=list(row.findings or []),
        new=new,
    )


async def handovers(sessions: Sessions) -> list[Handover]:
    async with sessions() as session:
        return [_handover(r, new=False) for r in await gazetteer_db.all_handovers(session)]


HANDOVER_COLUMNS = [
    ("source", "Nguồn"),
    ("from_unit", "Đơn vị bàn giao"),
    ("to_unit", "Đơn vị tiếp nhận"),
    ("to_source", "Nguồn tiếp nhận"),
    ("received", "Đã nhận"),
    ("reserved", "Đang giữ chỗ cho hộ"),
    ("paid", "Đã chi"),
    ("reimbursed", "Đã được cấp bù"),
    ("handed_over", "Số dư bàn giao"),
    ("receivable", "Còn phải thu (cấp bù)"),
    ("findings", "Tồn tại, kiến nghị"),
]


def write_handover_xlsx(items: list[Handover], path: Path, basis: str) -> Path:
    """The biên bản bàn giao as an Excel sheet: one row per source, money as whole đồng."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = "Bàn giao"
    append_row(ws, [f"Biên bản bàn giao tài chính, ngân sách theo {basis}"])
    ws["A1"].font = Font(bold=True)
    append_row(ws, [h for _, h in HANDOVER_COLUMNS])
    for c in ws[2]:
        c.font = Font(bold=True)
    for h in items:
        append_row(ws, ["; ".join(h.findings) if k == "findings" else getattr(h, k) for k, _ in HANDOVER_COLUMNS])
    for row in ws.iter_rows(min_row=3):
        for c in row:
            if isinstance(c.value, int):
                c.number_format = "#,##0"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path
