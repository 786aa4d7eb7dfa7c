"""Command line for operators and officers.

    python starter.py stack up|down|status|env
    python starter.py import FILE --as USER
    python starter.py act CODE STEP --as USER [--evidence REF]... [--reason TEXT] [--source CODE]
                                   [--tranche N] [--milestone M]
    python starter.py status CODE [--json]
    python starter.py list [--stage S] [--district D] [--json]
    python starter.py report [--json] [--csv DIR] [--xlsx FILE]
    python starter.py finance sources|source-add|receive|batch|decision-add|loan|reimburse
    python starter.py audit export DIR | replay [--from DIR] | timeline CODE [--lang en] [--json] | verify | chain
    python starter.py keys new|rotate|list
    python starter.py users add|reset|disable|enable|token|revoke --admin USER | bootstrap | trail [--verify] | list
    python starter.py web [--port N]
    python starter.py demo

Every `--as USER` (and `--admin USER`) is proved: the user's password (asked, or `--password-stdin`) or API
token (HOUSING_TOKEN, or `--token-stdin`); see operations/credentials.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from archive import cli as archive_cli
from archive.schedule import SCHEDULE_ID, archive_status, set_retention
from archive.source import open_archive
from archive.witness import KEY_PREFIX as WITNESS_KEY_PREFIX
from archive.witness import ensure_witness_keys, write_public_key_file
from archive.workflow import HistoryArchiveWorkflow
from auditor import cli as auditor_cli
from auditor.live import verify_live
from cli.command import database, err, fail, out, run
from core.client import connect, key_ring
from core.codec import PayloadKeyError, new_ring, read_ring, write_ring
from core.errors import Refusal
from core.logs import configure_logging
from core.settings import ROOT, Settings, get_settings
from core.signing import SigningKeyError, SigningRing, load_ring, new_key_id
from core.signing import new_ring as new_signing_ring
from core.signing import write_ring as write_signing_ring
from db import audit, households, ledger, outbox, users
from db import finance as finance_db
from db import signing_keys as signing_keys_db
from db.policy import current_workflow_policy
from models.archive import ArchiveSweepInput
from models.assertion import CHANNEL, OFFICERS
from models.finance import BatchAction, BatchSelection, Milestone, PayoutBatchInput, PayoutResult
from models.household import FORWARD, STAGE_VI, Stage, Step
from models.policy import WorkflowPolicy
from notify.channels import make_channel
from notify.dispatcher import Dispatcher
from operations import accounts, finance_ops, payouts, reconciliation, reports, sample
from operations import signing_keys as signing_keys_ops
from operations.actions import household_state_from, take_step
from operations.credentials import PASSWORD_STDIN, TOKEN_STDIN
from operations.credentials import sign_in as _credentials_sign_in
from operations.demo import drive_all
from operations.imports import ImportRejected, import_file
from operations.policies import add_version, push
from operations.seed import seed_demo as seed
from operations.signing_keys import ensure_stack_keys
from runtime.migrate import migrate as apply_migrations
from runtime.stack import Stack, StackError
from runtime.worker import ensure_search_attributes
from web import accounts as web_accounts

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Housing-support programme engine")
stack_app = typer.Typer(no_args_is_help=True, help="The embedded stack: PostgreSQL, Temporal dev server, worker")
keys_app = typer.Typer(no_args_is_help=True, help="Payload encryption keys and signing keys: create, rotate, list")
policy_app = typer.Typer(no_args_is_help=True, help="Who may take which step: versioned policy data")
finance_app = typer.Typer(no_args_is_help=True, help="Funding sources, payout batches, decisions, cấp bù, loans")
app.add_typer(finance_app, name="finance")
app.add_typer(stack_app, name="stack")
app.add_typer(auditor_cli.app, name="audit")
app.add_typer(archive_cli.app, name="archive")
app.add_typer(policy_app, name="policy")
app.add_typer(keys_app, name="keys")
app.add_typer(web_accounts.app, name="users")

T = TypeVar("T")


def _dong(amount: int) -> str:
    return f"{amount:,}".replace(",", ".")


def _signed_in(as_user: str, password_stdin: bool, token_stdin: bool) -> users.User:
    """`--as USER` only for the person who proves to be USER (password or token; operations/credentials.py):
    refused with a non-zero exit before the command does anything."""
    return _credentials_sign_in(as_user, password_stdin=password_stdin, token_stdin=token_stdin)


# ---------------------------------------------------------------------------------------------- stack


@stack_app.command("up")
def stack_up(worker: bool = typer.Option(True, help="Also start a background worker")) -> None:
    """Start what is not running yet (PostgreSQL, Temporal, the worker) and apply migrations."""
    settings = get_settings()
    stack = Stack(settings)
    code = 0
    try:
        _stack_up(stack, worker)
        if down := stack.down(with_processes=worker):
            err.print(f"[bold red]refused[/]: not running after start: {', '.join(down)}")
            code = 1
    except StackError as e:
        err.print(f"[bold red]refused[/]: {e}")
        code = 1
    except Exception as e:  # a migration or the Temporal client failed: say so, with a non-zero exit
        err.print(f"[bold red]failed[/]: {type(e).__name__}: {e}")
        code = 1
    # Leave without interpreter shutdown: the Temporal client's runtime threads may still call into Python
    # while it finalises, and abort the process (SIGABRT) after every piece had started. The pieces are
    # processes of their own; nothing here needs finalising.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stack_up(stack: Stack, worker: bool) -> None:
    _ensure_payload_keys(stack.settings)
    if stack.embedded_db:
        started = stack.postgres().start()
        out.print(f"PostgreSQL  {'started' if started else 'running'} at {stack.settings.database_url}")
    else:
        out.print(f"PostgreSQL  external at {stack.settings.database_url}")
    apply_migrations(stack.settings)  # as the owner; the worker and web app get the application's login
    out.print(
        f"Migrations  applied (alembic upgrade head) as {stack.settings.owner_role}; the application "
        f"connects as {stack.settings.app_role}"
    )
    for said in asyncio.run(ensure_stack_keys(stack.settings)):
        out.print(f"Keys        {said}")
    witness = ensure_witness_keys(stack.settings)
    out.print(
        f"Keys        witness key {witness.active}: checkpoints and its public key published in "
        f"{stack.settings.witness_path.name}/ in the state folder"
    )
    if stack.embedded_temporal:
        started = stack.temporal().start()
        out.print(
            f"Temporal    {'started' if started else 'running'} at {stack.settings.temporal_address}, "
            f"Web UI {stack.settings.temporal_ui_url}"
        )
    else:
        out.print(f"Temporal    external at {stack.settings.temporal_address}")

    async def register_search_attributes() -> list[str]:
        return await ensure_search_attributes(await connect(stack.settings), stack.settings.temporal_namespace)

    added = asyncio.run(register_search_attributes())
    if added:
        out.print(f"Temporal    search attributes registered: {', '.join(added)}")

    async def keep_histories() -> timedelta:
        client = await connect(stack.settings, keys_required=False)
        keep = timedelta(days=stack.settings.temporal_retention_days)
        return await set_retention(client, stack.settings.temporal_namespace, keep)

    out.print(
        f"Temporal    retention {archive_cli.days(asyncio.run(keep_histories()))} on namespace "
        f"{stack.settings.temporal_namespace} (TEMPORAL_RETENTION_DAYS); closed histories are archived "
        f"every {stack.settings.archive_interval_seconds} s"
    )
    _ensure_callback_secret(stack.settings)
    if stack.embedded_bank:
        bank = stack.bank()
        started = bank.start(stack.env())
        out.print(
            f"Bank        {'started' if started else 'running'} at {bank.url} (simulated; its book in "
            "bank/ in the state folder)"
        )
    else:
        out.print(f"Bank        external at {stack.settings.bank_url}")
    if worker:
        for each in stack.workers():
            started = each.start(stack.env())
            out.print(
                f"Worker      {'started' if started else 'running'} (log: {each.log_file.name} in the state folder)"
            )
        web = stack.web()
        started = web.start(stack.env())
        out.print(f"Web app     {'started' if started else 'running'} at {web.url} (API docs {web.url}/docs)")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the worker, Temporal and PostgreSQL started by 'stack up' (their data is kept)."""
    stack = Stack(get_settings())
    out.print(f"Web app     {'stopped' if stack.web().stop() else 'was not running'}")
    workers = stack.running_workers()
    for each in workers:
        each.stop()
    out.print(f"Worker      {f'{len(workers)} stopped' if workers else 'was not running'}")
    if stack.embedded_bank:
        out.print(f"Bank        {'stopped' if stack.bank().stop() else 'was not running'}")
    if stack.embedded_temporal:
        out.print(f"Temporal    {'stopped' if stack.temporal().stop() else 'was not running'}")
    if stack.embedded_db:
        out.print(f"PostgreSQL  {'stopped' if stack.postgres().stop() else 'was not running'}")


@stack_app.command("status")
def stack_status() -> None:
    stack = Stack(get_settings())
    table = Table("part", "where", "state")
    pieces = stack.pieces()
    for piece in pieces:
        table.add_row(piece.name, piece.where, piece.state)
    table.add_row("Web UI", stack.settings.temporal_ui_url, "")
    out.print(table)
    if not [p for p in pieces if p.name in ("PostgreSQL", "Temporal") and p.state == "stopped"]:
        try:
            got = run(_archive_status)
        except Exception as e:  # noqa: BLE001 (the pieces' own rows say what is down)
            err.print(f"archive: not read ({type(e).__name__}: {e})")
        else:
            archive_table = Table(show_header=False)
            for name, value in archive_cli.status_rows(got):
                archive_table.add_row(name, value)
            out.print(archive_table)
    if down := [p.name for p in pieces if p.state == "stopped"]:
        err.print(f"down: {', '.join(down)}")
        raise typer.Exit(1)


async def _archive_status(settings: Settings):
    client = await connect(settings, keys_required=False)
    async with database(settings) as sessions:
        return await archive_status(client, open_archive(sessions, settings), settings.temporal_namespace)


@stack_app.command("env")
def stack_env() -> None:
    """Shell-exportable settings, for the temporal CLI and psql: eval "$(python starter.py stack env)"."""
    for key, value in Stack(get_settings()).env().items():
        print(f"export {key}={value}")


def _ensure_payload_keys(settings: Settings) -> None:
    """The embedded stack's first start creates its payload key; configured keys are left alone."""
    path = settings.payload_keys_path
    if settings.payload_keys or not settings.payload_encryption or path.exists():
        return
    ring = new_ring()
    write_ring(path, ring)
    out.print(
        f"Keys        payload key {ring.active} created ({path.name} in the state folder; keep a copy: "
        "without it the histories cannot be read)"
    )


def _ensure_callback_secret(settings: Settings) -> None:
    """The embedded stack's first start creates the secret the bank signs its callbacks with."""
    path = settings.callback_secret_path
    if settings.payment_callback_secret or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secrets.token_urlsafe(32) + "\n")
    out.print(f"Keys        payment callback secret created ({path.name} in the state folder)")


# ----------------------------------------------------------------------------------------------- keys


@keys_app.command("new")
def keys_new(file: Path = typer.Option(None, help="Where to write (default: the configured key file)")) -> None:
    """Create a key file with one fresh AES-256 key. Refuses to overwrite an existing file."""
    path = file or get_settings().payload_keys_path
    if path.exists():
        fail(f"{path.name} exists; use 'keys rotate' to add a key")
    ring = new_ring()
    write_ring(path, ring)
    out.print(f"payload key {ring.active} written to {path.name}")


@keys_app.command("rotate")
def keys_rotate(file: Path = typer.Option(None, help="The key file (default: the configured one)")) -> None:
    """Make a fresh key the active one. Old keys stay in the file: they still open what they sealed.
    Restart the worker to seal with the new key."""
    path = file or get_settings().payload_keys_path
    try:
        ring = read_ring(path).rotated()
    except (OSError, PayloadKeyError) as e:
        fail(str(e))
    write_ring(path, ring)
    out.print(f"active payload key is now {ring.active}; kept: {', '.join(k for k in ring.keys if k != ring.active)}")


@keys_app.command("list")
def keys_list() -> None:
    """Key ids in the ring, the active one first (never the keys themselves)."""
    try:
        ring = key_ring(get_settings())
    except PayloadKeyError as e:
        fail(str(e))
    if ring is None:
        out.print("payload encryption is switched off (PAYLOAD_ENCRYPTION=false)")
        return
    for k in ring.keys:
        out.print(f"{k}{'  (active)' if k == ring.active else ''}")


@keys_app.command("signing-new")
def keys_signing_new(
    file: Path = typer.Option(..., help="Where to write the private ring (a front door's or the bank's secret)"),
    holder: str = typer.Option("officers", help="officers (web app, command line) or channel (the bank)"),
) -> None:
    """Create a signing ring with one fresh Ed25519 key, and FILE.pub with its public half to register
    (`keys signing-register FILE.pub`, as the schema owner). Refuses to overwrite."""
    if holder not in (OFFICERS, CHANNEL):
        fail(f"--holder must be {OFFICERS} or {CHANNEL}")
    if file.exists():
        fail(f"{file.name} exists; use 'keys signing-rotate' to add a key")
    ring = new_signing_ring(new_key_id("officers-" if holder == OFFICERS else "bank-"))
    write_signing_ring(file, ring)
    file.with_name(file.name + ".pub").write_text(signing_keys_ops.public_file_text(ring, holder))
    out.print(f"signing key {ring.active} ({holder}) written to {file.name}; public half in {file.name}.pub")


@keys_app.command("witness-new")
def keys_witness_new(
    file: Path = typer.Option(..., help="Where to write the witness's private ring (the workers')"),
) -> None:
    """Create the witness's ring (it signs the archive's copies and the checkpoints; the database never holds
    it), and FILE.pub with its public key for the readers and the auditors (WITNESS_PUBLIC_KEY_FILE). Refuses
    to overwrite: a new ring would disown everything the old one signed."""
    if file.exists():
        fail(f"{file.name} exists: the witness keeps its ring")
    ring = new_signing_ring(new_key_id(WITNESS_KEY_PREFIX))
    write_signing_ring(file, ring)
    write_public_key_file(file.with_name(file.name + ".pub"), ring)
    out.print(f"witness key {ring.active} written to {file.name}; public key in {file.name}.pub (publish it)")


@keys_app.command("signing-register")
def keys_signing_register(files: list[Path] = typer.Argument(..., help="Public key files (FILE.pub)")) -> None:
    """Register public signing keys in PostgreSQL (as the schema owner, DATABASE_OWNER_URL): the engine and
    the auditors verify with them. A key already registered is left as it is."""
    settings = get_settings()
    keys = []
    for f in files:
        try:
            keys += signing_keys_ops.parse_public_file(f.read_text(encoding="utf-8"), where=f.name)
        except (OSError, ValueError) as e:
            fail(str(e))
    added = asyncio.run(signing_keys_ops.register(settings, keys))
    out.print(f"registered: {', '.join(added) if added else 'nothing new'} ({len(keys)} key(s) read)")


@keys_app.command("signing-rotate")
def keys_signing_rotate(bank: bool = typer.Option(False, "--bank", help="The bank's ring, not the officers")) -> None:
    """A fresh active signing key, registered valid from now; the earlier keys stay valid for the grace
    (a step's life and the clock skew), then keep verifying what they signed before. Restart the web app (or
    the bank) within the grace to sign with it."""
    try:
        active, kept = asyncio.run(signing_keys_ops.rotate(get_settings(), bank=bank))
    except (OSError, SigningKeyError) as e:
        fail(str(e))
    out.print(f"active signing key is now {active}; retired (still verifying what they signed): {', '.join(kept)}")


@keys_app.command("signing-list")
def keys_signing_list() -> None:
    """The public signing keys the engine trusts, by holder, with the period each is valid in."""

    async def go(settings: Settings):
        async with database(settings) as sessions, sessions() as s:
            return await signing_keys_db.load(s)

    keys = run(go)
    table = Table("key", "holder", "valid from", "valid until", title="Signing keys")
    for k in sorted(keys.keys.values(), key=lambda k: (k.holder, k.valid_from)):
        table.add_row(
            k.key_id,
            k.holder,
            f"{k.valid_from:%Y-%m-%d %H:%M}",
            f"{k.valid_until:%Y-%m-%d %H:%M}" if k.valid_until else "—",
        )
    out.print(table)


@app.command("migrate")
def migrate() -> None:
    """Apply the database migrations (alembic upgrade head) as the schema owner (DATABASE_OWNER_URL),
    granting the application's role (DATABASE_URL's user) what it needs."""
    settings = get_settings()
    apply_migrations(settings)
    one = settings.owner_role == settings.app_role
    out.print(
        f"migrations applied as {settings.owner_role}; "
        + ("one role owns and runs everything: nothing granted" if one else f"granted to {settings.app_role}")
    )


# ---------------------------------------------------------------------------------------------- data


@app.command("seed-demo")
def seed_demo() -> None:
    """Load the demo officers, funding sources and budget receipts (safe to re-run)."""

    async def go(settings: Settings) -> dict:
        async with database(settings) as sessions:
            return await seed(sessions)

    out.print(run(go))


@app.command("import")
def import_list(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV of the approved list"),
    as_user: str = typer.Option(..., "--as", help="User id of the officer importing"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Import an approved list: every row is checked; any problem and nothing is imported."""
    _signed_in(as_user, password_stdin, token_stdin)

    async def go(settings: Settings):
        async with database(settings) as sessions:
            client = await connect(settings, lazy=True)  # not contacted until the list has been registered
            return await import_file(sessions, client, settings.temporal_task_queue, file, as_user)

    try:
        report = run(go)
    except ImportRejected as rejected:
        err.print(f"[bold red]{file.name} rejected[/]: {len(rejected.problems)} problem(s); nothing was imported")
        for p in rejected.problems:
            err.print(f"  {p}")
        raise typer.Exit(2) from None
    except Refusal as e:
        fail(str(e))
    out.print(report.describe(file.name))


# ---------------------------------------------------------------------------------------------- actions


@app.command("act")
def act(
    code: str = typer.Argument(..., help="Household code"),
    step: Step = typer.Argument(..., help="The step to take"),
    as_user: str = typer.Option(..., "--as", help="User id of the officer taking the step"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
    evidence: list[str] = typer.Option([], "--evidence", "-e", help="Evidence document reference (repeatable)"),
    reason: str | None = typer.Option(None, "--reason", "-r"),
    source: str | None = typer.Option(
        None, "--source", help="allocate: take it all from this source (default: the allocation policy splits)"
    ),
    tranche: int | None = typer.Option(None, "--tranche", help="authorise_payout / release_payout: which tranche"),
    milestone: Milestone | None = typer.Option(None, "--milestone", help="report_progress: the milestone reached"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Take one step on a household, signed by this front door for the user who proved who they are. The
    engine refuses what the rules do not allow."""
    _signed_in(as_user, password_stdin, token_stdin)

    async def go(settings: Settings):
        async with database(settings) as sessions:
            client = await connect(settings)
            return await take_step(
                client,
                sessions,
                code,
                step,
                as_user,
                evidence=evidence,
                reason=reason,
                source=source,
                tranche=tranche,
                signer=load_ring(settings),
                milestone=milestone.value if milestone else None,
            )

    try:
        result = run(go)
    except Refusal as r:
        fail(str(r))
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    money = f", {_dong(result.amount)} đồng" if getattr(result, "amount", None) else ""
    if isinstance(result, PayoutResult):
        payment = f", payment {result.payment_id}" if result.payment_id else ""
        out.print(
            f"{result.household_code}: {step.value} done — tranche {result.tranche} is {result.status.value}"
            f" (step {result.seq}{money}{payment})"
        )
        return
    out.print(
        f"{result.household_code}: {step.value} done — {result.from_stage.value} → {result.to_stage.value}"
        f" (step {result.seq}{money})"
    )


@app.command("status")
def status(code: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """A household's stage, money and timeline, from its workflow."""

    async def go(settings: Settings):
        client = await connect(settings)
        async with database(settings) as sessions:  # a closed file Temporal no longer holds: from the archive
            return await household_state_from(client, code, sessions=sessions, archive=open_archive(sessions, settings))

    try:
        state, where = run(go)
    except Refusal as r:
        fail(str(r))
    if where == "archive":
        err.print(f"{state.household_code}: read from the archive (Temporal's retention has removed its history)")
    if as_json:
        print(state.model_dump_json(indent=2))
        return
    out.print(
        f"[bold]{state.household_code}[/] — stage [bold]{state.stage.value}[/] ({STAGE_VI[state.stage]}) "
        f"since {state.stage_since:%Y-%m-%d %H:%M} UTC; policy {state.policy_version}"
    )
    out.print(
        f"entitlement {_dong(state.entitlement)} · reserved {_dong(state.reserved)} · paid {_dong(state.paid)}"
        f" · source {state.funding_source or '-'} · reminders {state.reminders_sent}"
    )
    if state.tranches:
        tranches = Table(
            "tranche",
            "share",
            "due at",
            "đồng",
            "status",
            "sources",
            "authorised by",
            "released by",
            "attempts",
            "payment",
            title="Tranches",
        )
        for t in state.tranches:
            tranches.add_row(
                str(t.n),
                f"{t.percent}%",
                t.milestone.value,
                _dong(t.amount),
                t.status.value,
                " + ".join(f"{p.source} {_dong(p.amount)}" for p in t.pieces),
                t.authorised_by or "",
                t.released_by or "",
                str(t.attempts),
                t.payment_id or "",
            )
        out.print(tranches)
    table = Table("#", "step", "from → to", "when (UTC)", "who", "evidence", "reason", "đồng")
    for e in state.timeline:
        step = f"{e.step.value} (tranche {e.tranche})" if e.tranche else e.step.value
        table.add_row(
            str(e.seq),
            step,
            f"{e.from_stage.value} → {e.to_stage.value}",
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            f"{e.user_id} ({e.role}, {e.agency})",
            ", ".join(e.evidence),
            e.reason or "",
            _dong(e.amount) if e.amount else "",
        )
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
        async with database(settings) as sessions, sessions() as session:
            return await households.list_rows(
                session, stage=stage.value if stage else None, district=district, limit=limit
            )

    rows = run(go)
    if as_json:
        print(json.dumps([asdict(r) for r in rows], default=str, ensure_ascii=False, indent=2))
        return
    table = Table(
        "code",
        "district",
        "commune",
        "group",
        "support",
        "stage",
        "since",
        "reserved",
        "paid",
        title=f"{len(rows)} households",
    )
    for r in rows:
        table.add_row(
            r.code,
            r.district,
            r.commune,
            r.beneficiary_group,
            r.support_type,
            r.stage,
            f"{r.stage_since:%Y-%m-%d}",
            _dong(r.reserved),
            _dong(r.paid),
        )
    out.print(table)


@app.command("report")
def report(
    as_json: bool = typer.Option(False, "--json"),
    csv_dir: Path | None = typer.Option(None, "--csv", help="Write the reconciliation tables as CSV files here"),
    xlsx: Path | None = typer.Option(None, "--xlsx", help="Write the reconciliation as an Excel workbook"),
) -> None:
    """Households by district and stage, and the reconciliation per source, district and decision
    (received, reserved, released, paid, free), checked against the ledger. Exit 1 if it does not balance."""

    async def go(settings: Settings):
        async with database(settings) as sessions, sessions() as session:
            return await reports.build(session), await reconciliation.reconcile(session)

    rep, rec = run(go)
    written = (reconciliation.write_csv(rec, csv_dir) if csv_dir else []) + (
        [reconciliation.write_xlsx(rec, xlsx)] if xlsx else []
    )
    if as_json:
        print(json.dumps(rep.as_json() | {"reconciliation": rec.as_json()}, ensure_ascii=False, indent=2))
    else:
        print_report(rep)
        print_reconciliation(rec)
    for path in written:
        err.print(f"wrote {path}")
    if not rec.balanced:
        raise typer.Exit(1)


def _cell(v: object) -> str:
    if isinstance(v, bool):
        return "có" if v else "không"
    return _dong(v) if isinstance(v, int) else str(v)


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


def print_report(rep: reports.Report) -> None:
    table = Table(
        "district",
        "stage",
        "households",
        "new builds",
        "repairs",
        "reserved (đ)",
        "paid (đ)",
        title="Households by district and stage",
    )
    for r in rep.by_district_stage:
        table.add_row(
            r.district, r.stage, str(r.households), str(r.new_builds), str(r.repairs), _dong(r.reserved), _dong(r.paid)
        )
    totals = rep.as_json()["totals"]
    table.add_section()
    table.add_row(
        "[bold]total",
        "",
        str(totals["households"]),
        str(totals["new_builds"]),
        str(totals["repairs"]),
        _dong(totals["reserved"]),
        _dong(totals["paid"]),
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
            f"{d.households:,}",
            f"{d.new_builds:,}",
            f"{d.repairs:,}",
            _dong(d.entitled),
            _dong(d.reserved),
            _dong(d.paid),
        )
    out.print(table)


# ---------------------------------------------------------------------------------------------- finance


def _amount(text: str) -> int:
    """Whole đồng, checked before anyone is asked for a password."""
    try:
        return finance_ops.parse_dong(text)
    except Refusal as e:
        fail(str(e))


def _finance(fn: Callable[..., Awaitable[T]]) -> T:
    try:
        return run(fn)
    except Refusal as e:
        fail(str(e))


@finance_app.command("sources")
def finance_sources(as_json: bool = typer.Option(False, "--json")) -> None:
    """Funding sources, their rules and balances (received, reserved, released, paid, free)."""

    async def go(settings: Settings):
        async with database(settings) as sessions, sessions() as session:
            rules = await finance_db.source_rules(session)
            return (await reconciliation.reconcile(session)).sources, rules

    lines, rules = run(go)
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
            _dong(s.received),
            _dong(s.reserved),
            _dong(s.released),
            _dong(s.paid),
            _dong(s.free),
        )
    out.print(table)


@finance_app.command("source-add")
def finance_source_add(
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
    _signed_in(as_user, password_stdin, token_stdin)

    async def go(settings: Settings):
        async with database(settings) as sessions:
            return await finance_ops.add_source(
                sessions,
                as_user,
                code=code,
                name=name,
                category=category,
                state_budget=state_budget,
                priority=priority,
                rules=parsed,
            )

    try:
        new = _finance(go)
    except ValidationError as e:
        fail(f"--rules: {e}")
    out.print(f"source {code} {'added' if new else 'updated'}")


@finance_app.command("receive")
def finance_receive(
    source: str,
    amount: str = typer.Argument(..., help="Whole đồng; 1.200.000.000 and 1_200_000_000 are accepted"),
    ref: str = typer.Option(..., "--ref", help="The document that brought the money (the idempotency key)"),
    as_user: str = typer.Option(..., "--as"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Record budget or donations arriving in a source. The same --ref twice records it once."""
    dong = _amount(amount)
    _signed_in(as_user, password_stdin, token_stdin)

    async def go(settings: Settings):
        async with database(settings) as sessions:
            return await finance_ops.receive(sessions, as_user, source=source, amount=dong, ref=ref)

    t, new = _finance(go)
    if new:
        out.print(f"{source}: received {_dong(t.amount)} đồng ({ref}), transfer {t.id}")
    else:
        out.print(f"{source}: {ref} was recorded before ({_dong(t.amount)} đồng, transfer {t.id}); nothing written")


@finance_app.command("batch")
def finance_batch(
    action: BatchAction,
    tranche: int = typer.Option(..., "--tranche", min=1),
    as_user: str = typer.Option(..., "--as"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
    district: str | None = typer.Option(None),
    decision: str | None = typer.Option(None, help="Decision reference, e.g. 270/QĐ-UBND"),
    codes: list[str] = typer.Option([], "--code", help="Household code (repeatable)"),
    evidence: list[str] = typer.Option([], "--evidence", "-e"),
    ref: str = typer.Option(date.today().isoformat(), "--ref", help="Batch reference; the same one re-runs it"),
    concurrency: int = typer.Option(8, min=1, max=64),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Authorise (Finance) or release (treasury / commune) one tranche for many households at once. Safe to
    run again: what is done already is skipped."""
    selection = BatchSelection(district=district, decision_ref=decision, codes=[c.upper() for c in codes])
    _signed_in(as_user, password_stdin, token_stdin)

    async def go(settings: Settings):
        async with database(settings) as sessions:
            client = await connect(settings)
            return await _batch(
                client,
                sessions,
                settings.temporal_task_queue,
                action,
                tranche,
                selection,
                as_user,
                evidence or [f"{action.value}/{ref}"],
                ref,
                concurrency,
                signer=load_ring(settings),
                quiet=as_json,
            )

    result = _finance(go)
    if as_json:
        print(result.model_dump_json(indent=2))
    if result.progress.failed:
        raise typer.Exit(1)


async def _batch(
    client, sessions, task_queue, action, tranche, selection, user, evidence, ref, concurrency, *, signer, quiet=False
):
    """Run one payout batch as `user` (already authenticated), its input signed by this front door."""
    async with sessions() as session:
        actor = await users.require_actor(session, user)
    inp = PayoutBatchInput(
        batch_id=payouts.batch_id_for(action, tranche, selection, ref),
        action=action,
        tranche=tranche,
        selection=selection,
        actor=actor,
        evidence=evidence,
        concurrency=concurrency,
    )
    inp = payouts.sign_batch(signer, inp)
    label = f"{action.value} tranche {tranche} — {selection.describe()}"
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err if quiet else out,
    ) as progress:
        task = progress.add_task(label, total=None)

        def show(p) -> None:
            progress.update(task, total=p.total or None, completed=p.finished)

        result = await payouts.run_batch(client, task_queue, inp, on_progress=show)
    p = result.progress
    (err if quiet else out).print(
        f"batch {result.batch_id}: {p.done} done ({_dong(result.amount)} đồng), {p.skipped} skipped (done before), "
        f"{p.failed} failed, of {p.total}"
    )
    if p.failed:
        table = Table("household", "rule", "message", title="Failures")
        for i in result.items:
            if i.outcome == "failed":
                table.add_row(i.household_code, i.rule or "", i.message or "")
        (err if quiet else out).print(table)
    return result


@finance_app.command("decision-add")
def finance_decision_add(
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
    _signed_in(as_user, password_stdin, token_stdin)

    async def go(settings: Settings):
        async with database(settings) as sessions:
            return await finance_ops.add_decision(
                sessions, as_user, ref, supplements=supplements, decided_on=when, note=note
            )

    new = _finance(go)
    out.print(
        f"decision {ref}: {'registered' if new else 'already registered'}"
        + (f" (supplements {supplements})" if supplements else "")
    )


@finance_app.command("reimburse")
def finance_reimburse(
    advance_source: str,
    ref: str = typer.Option(..., "--ref", help="The reimbursement decision (the idempotency key)"),
    amount: str | None = typer.Option(None, help="Default: all that is outstanding, as far as the payer has free"),
    as_user: str = typer.Option(..., "--as"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Cấp bù: pay back a district's advance for national target programme households."""
    dong = _amount(amount) if amount else None
    _signed_in(as_user, password_stdin, token_stdin)

    async def go(settings: Settings):
        async with database(settings) as sessions:
            return await finance_ops.reimburse(sessions, as_user, advance_source=advance_source, ref=ref, amount=dong)

    t, new = _finance(go)
    if t is None:
        out.print(f"{advance_source}: nothing outstanding, or nothing free to pay it")
    else:
        out.print(
            f"{advance_source}: reimbursed {_dong(t.amount)} đồng ({ref}), transfer {t.id}"
            + ("" if new else " — recorded before; nothing written")
        )


@finance_app.command("loan")
def finance_loan(
    code: str,
    amount: str,
    status: str = typer.Option(..., help=", ".join(finance_db.LOAN_STATUSES)),
    ref: str = typer.Option(..., "--ref", help="The loan contract or event reference (the idempotency key)"),
    as_user: str = typer.Option(..., "--as"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Record a VBSP preferential loan event for a household: co-financing, never grant money."""
    dong = _amount(amount)
    _signed_in(as_user, password_stdin, token_stdin)

    async def go(settings: Settings):
        async with database(settings) as sessions:
            return await finance_ops.record_loan(
                sessions, as_user, household_code=code.upper(), amount=dong, status=status, ref=ref
            )

    new = _finance(go)
    out.print(f"{code}: loan {status} {amount} đồng {'recorded' if new else 'was recorded before'}")


# ---------------------------------------------------------------------------------------------- policy


@policy_app.command("show")
def policy_show(as_json: bool = typer.Option(False, "--json")) -> None:
    """The workflow policy in force today: roles per step, SLA days, steps that need different people."""

    async def go(settings: Settings):
        async with database(settings) as sessions, sessions() as session:
            return await current_workflow_policy(session, date.today())

    current = run(go)
    if as_json:
        print(current.model_dump_json(indent=2))
        return
    table = Table(
        "step",
        "roles",
        "responsible agency",
        "evidence",
        "SLA days (stage)",
        title=f"Workflow policy {current.version}",
    )
    stage_of = {step: stage for stage, (step, _) in FORWARD.items()}
    for step in (s for s in Step if s in current.steps):
        rule = current.steps[step]
        stage = stage_of.get(step)
        sla = f"{current.sla_days.get(stage, '-')} ({stage.value})" if stage else "-"
        table.add_row(
            step.value,
            ", ".join(rule.roles),
            rule.responsible_agency,
            "required" if rule.evidence_required else "-",
            sla,
        )
    out.print(table)
    out.print("different people for: " + "; ".join(f"{a.value} / {b.value}" for a, b in current.distinct_actors))


@policy_app.command("apply")
def policy_apply(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Policy JSON (see 'policy show --json')"),
    as_user: str = typer.Option(..., "--as", help="An officer with a policy admin role"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
    effective_from: str = typer.Option(None, help="YYYY-MM-DD; default today"),
) -> None:
    """Store a new policy version and apply it to every household in flight."""
    try:
        new = WorkflowPolicy.model_validate_json(file.read_bytes())
        start = date.fromisoformat(effective_from) if effective_from else date.today()
    except (ValidationError, ValueError) as e:
        fail(f"{file.name}: {e}")
    _signed_in(as_user, password_stdin, token_stdin)

    async def go(settings: Settings):
        async with database(settings, url=settings.owner_asyncpg_url) as owner:  # only the owner inserts policies
            await add_version(owner, new, start, as_user)
        async with database(settings) as sessions:
            return await push(await connect(settings), sessions, new, as_user, signer=load_ring(settings))

    try:
        report = run(go)
    except Refusal as e:
        fail(str(e))
    out.print(
        f"policy {new.version} stored (effective {start}); applied to {report.applied} households in flight"
        + (f", refused by {report.refused}" if report.refused else "")
    )


# ---------------------------------------------------------------------------------------------- audit


@app.command("notify-drain")
def notify_drain() -> None:
    """Send every due notification now (the worker does this continuously)."""

    async def go(settings: Settings):
        async with database(settings) as sessions:
            channel = make_channel(settings.notify_channel, settings.notifications_path)
            sent = await Dispatcher(sessions, channel, settings).drain()
            async with sessions() as session:
                return sent, await outbox.counts(session)

    sent, counts = run(go)
    out.print(f"sent {sent}; outbox now {counts}")


# ---------------------------------------------------------------------------------------------- demo


@app.command("web")
def web_cmd(
    host: str | None = typer.Option(None, "--host", help="Default: WEB_HOST (127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="Default: WEB_PORT (8000)"),
) -> None:
    """Serve the web app and the HTTP API (OpenAPI at /docs) on the configured servers."""
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(
        "web.app:create_app",
        factory=True,
        host=host or settings.web_host,
        port=port or settings.web_port,
        log_config=None,
    )


@app.command("demo")
def demo(
    households_csv: Path = typer.Option(ROOT / "data/demo/households.csv", "--households", exists=True),
    concurrency: int = typer.Option(16, min=1, max=200),
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
    settings = get_settings()
    budget = None
    if province:
        households_csv, budget = _province_files(settings, province)
    stack = Stack(settings)
    out.rule("[bold]1. Stack")
    try:
        _stack_up(stack, worker=True)
    except StackError as e:
        fail(str(e))

    async def go(settings: Settings) -> None:
        signer = load_ring(settings)  # the demo acts as its officers' front door: one ring for every step
        async with database(settings) as sessions:
            client = await connect(settings)
            out.rule("[bold]2. Reference data and the approved list")
            out.print(f"seeded: {await seed(sessions)}")
            if budget:
                ref = f"Giao dự toán hỗ trợ nhà ở 2025 toàn tỉnh ({province})"
                t, _ = await finance_ops.receive(
                    sessions, sample.FINANCE_USERS[1], source="NS-TINH", amount=budget, ref=ref
                )
                out.print(f"NS-TINH received {_dong(t.amount)} đồng: the province's whole list at today's policy")
            rep = await import_file(sessions, client, settings.temporal_task_queue, households_csv, "tinh.luong")
            out.print(rep.describe(households_csv.name))
            codes = list(rep.codes)
            extra = households_csv.with_name("households_supplementary.csv")
            if extra.exists():  # a supplementary decision amends the approved list
                await finance_ops.add_decision(
                    sessions,
                    sample.PROVINCE_USER,
                    sample.SUPPLEMENTARY_DECISION,
                    supplements=sample.DECISION,
                    decided_on=date(2025, 6, 30),
                    note="Danh sách bổ sung",
                )
                more = await import_file(sessions, client, settings.temporal_task_queue, extra, "tinh.luong")
                out.print(
                    more.describe(f"{extra.name} ({sample.SUPPLEMENTARY_DECISION}, supplements {sample.DECISION})")
                )
                codes += more.codes
            async with sessions() as session:
                items = [h for code in codes if (h := await households.get_household(session, code))]

            out.rule("[bold]3. The engine refuses what the rules do not allow")
            first = items[0]
            for step, user in ((Step.SETTLE, "tc.nong"), (Step.VERIFY, "tc.hoang")):
                try:
                    await take_step(client, sessions, first.code, step, user, evidence=["DEMO"], signer=signer)
                except Refusal as r:
                    out.print(f"{first.code}: {step.value} as {user} → [yellow]{r.rule}[/]: {r.message}")

            out.rule("[bold]4. Households through the programme; tranches paid in batches")
            failures = await _demo_rounds(settings, sessions, client, items, concurrency, signer)

            out.rule("[bold]5. Cấp bù and co-financing")
            await _demo_finance_extras(sessions, items)

            out.rule("[bold]6. Summary")
            await _demo_web_work(settings, sessions, client, first)
            logins = await _demo_logins(sessions, first, items, signer)
            await _summary(settings, sessions, client, example=first.code, logins=logins)
            if failures:
                raise typer.Exit(1)

    run(go)


def _province_files(settings: Settings, name: str) -> tuple[Path, int]:
    """Write the generated province's lists into the state folder; return the main list and the support
    its households are entitled to (the budget the demo gives the province)."""
    from bench.province import SUPPORT, lang_son, write  # the generator lives with the benchmarks

    if name != "lang-son":
        fail(f"--province {name!r}: this build generates 'lang-son'")
    where = settings.state_dir / f"province-{name}"
    where.mkdir(parents=True, exist_ok=True)
    generated = lang_son()
    write(generated, where)
    return where / "households.csv", sum(SUPPORT[r["support_type"]] for r in generated.all)


# A payout batch covers one decision, split by district when the decision's list is longer than this: what
# one Finance officer authorises at a time, and a batch workflow's history stays small.
BATCH_SPLIT = 500


async def _demo_rounds(
    settings: Settings, sessions, client, items, concurrency: int, signer: SigningRing
) -> dict[str, str]:
    """Officers take every step they can; then Finance authorises and the treasury releases each due
    tranche in one batch per decision; the payment channel answers; again until every file is closed."""
    failures: dict[str, str] = {}
    finance_user, treasury = sample.FINANCE_USERS[0], sample.TREASURY_USER
    per_decision = Counter(h.decision_ref for h in items)
    selections = [
        BatchSelection(decision_ref=d, district=district)
        for d in sorted(per_decision)
        for district in (
            sorted({h.district for h in items if h.decision_ref == d}) if per_decision[d] > BATCH_SPLIT else [None]
        )
    ]
    codes = [h.code for h in items]
    for round_no in range(1, 8):
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=out
        ) as progress:
            task = progress.add_task(f"round {round_no}: officers' steps", total=len(items))
            result = await drive_all(
                client,
                sessions,
                items,
                signer=signer,
                concurrency=concurrency,
                payouts=False,
                on_done=lambda _, t=task: progress.advance(t),
            )
        failures |= result.failures
        out.print(f"round {round_no}: {result.steps} steps taken; {result.closed} files closed")
        pending = await payouts.tranche_counts(sessions, codes, ("due", "authorised"))
        if not pending:
            break
        for tranche in sorted({n for n, _ in pending}):
            for selection in selections:
                for action, user in ((BatchAction.AUTHORISE, finance_user), (BatchAction.RELEASE, treasury)):
                    where = "/".join(filter(None, (selection.decision_ref, selection.district)))
                    evidence = [f"{action.value}/{where}/t{tranche}/r{round_no}"]
                    await _batch(
                        client,
                        sessions,
                        settings.temporal_task_queue,
                        action,
                        tranche,
                        selection,
                        user,
                        evidence,
                        f"demo-r{round_no}",
                        8,
                        signer=signer,
                    )
        left = await payouts.wait_for_payments(sessions, codes)
        answered = await payouts.payment_counts(sessions, codes)
        out.print(f"payment channel: {answered}" + (f"; {left} not answered yet" if left else ""))
    for code, why in failures.items():
        err.print(f"[red]{code}[/]: {why}")
    return failures


async def _demo_finance_extras(sessions, items) -> None:
    finance_user = sample.FINANCE_USERS[1]
    t, new = await finance_ops.receive(
        sessions, finance_user, source="MTQG-GNBV", amount=1_000_000_000, ref="Giao dự toán MTQG GNBV 2025 đợt 2"
    )
    again = "" if new else " — recorded before, nothing written"
    out.print(f"MTQG-GNBV received {_dong(t.amount)} đồng (second assignment){again}")
    paid_back, new = await finance_ops.reimburse(
        sessions, finance_user, advance_source="ADV-LOCBINH", ref="QĐ cấp bù Lộc Bình đợt 1"
    )
    again = "" if new else " — recorded before, nothing written"
    out.print(
        "ADV-LOCBINH: "
        + (
            f"reimbursed {_dong(paid_back.amount)} đồng by MTQG-GNBV (cấp bù){again}"
            if paid_back
            else "nothing to reimburse"
        )
    )
    poor = [h for h in items if h.beneficiary_group.value == "poor"][:6]
    for h in poor:
        await finance_ops.record_loan(
            sessions,
            sample.VBSP_USER,
            household_code=h.code,
            amount=40_000_000,
            status="disbursed",
            ref=f"HĐ-VAY/{h.code}",
        )
    out.print(f"VBSP loans recorded for {len(poor)} poor households (co-financing, not grant money)")


async def _demo_web_work(settings: Settings, sessions, client, first) -> None:
    """A few households left at verification in the first household's commune, so that each officer has
    work waiting in the web app (the demo's own list is closed by now)."""
    rows = sample.households(6, seed=2026, prefix="LS270W", decision=sample.SUPPLEMENTARY_DECISION)
    rows = [r | {"district": first.district, "commune": first.commune, "programme": ""} for r in rows]
    path = settings.state_dir / "web-work.csv"
    sample.write_households_csv(path, rows)
    rep = await import_file(sessions, client, settings.temporal_task_queue, path, sample.PROVINCE_USER)
    out.print(
        f"left for the web app: {len(rep.codes)} households at verification in {first.commune} ({', '.join(rep.codes)})"
    )


async def _demo_logins(sessions, first, items, signer) -> list[tuple[str, str, str, str]]:
    """Passwords for one officer of each kind (new ones on every demo run), to sign in to the web app or
    prove `--as USER` at the command line; each recorded in the account trail, signed with the front door's
    ring `signer` (a password the trail does not name signs nobody in)."""
    other = next((h for h in items if h.district != first.district), first)
    who = [
        ("commune officer", sample.commune_user(first.district, first.commune), f"{first.commune}: verify, report"),
        ("district officer", sample.district_user(first.district), f"{first.district}: approve, accept"),
        ("district officer", sample.district_user(other.district), f"{other.district} (cannot see {first.district})"),
        ("finance", sample.FINANCE_USERS[0], "allocate, authorise payout batches"),
        ("finance", sample.FINANCE_USERS[1], "settle (not the same officer who allocated)"),
        ("treasury", sample.TREASURY_USER, "release authorised payouts"),
        ("auditor", sample.AUDITOR_USER, "read-only: timelines, three-way check"),
        ("administrator", sample.ADMIN_USER, "starter.py users … --admin, policy apply, audit restore"),
    ]
    logins = []
    async with sessions() as session, session.begin():
        for kind, user, does in who:
            password = secrets.token_urlsafe(9)
            # Recorded in the account trail like any reset, by the one setting the demo up.
            await accounts.reset_password(session, accounts.SETUP, user, password, signer=signer)
            logins.append((kind, user, password, does))
    return logins


async def _summary(
    settings: Settings, sessions, client, example: str, logins: list[tuple[str, str, str, str]] | None = None
) -> None:
    async with sessions() as session:
        rep = await reports.build(session)
        rec = await reconciliation.reconcile(session)
        mismatches = await reports.reconcile_households(session)
        ledger_problems = await ledger.check_invariants(session)
        chain = await audit.verify_chain(session)
        totals = await reports.support_totals(session)
    print_report(rep)
    print_reconciliation(rec)
    xlsx = reconciliation.write_xlsx(rec, settings.state_dir / "reconciliation.xlsx")
    closed = await client.count_workflows("Stage='closed'")
    # The closed files archived now (the worker's schedule would within ARCHIVE_INTERVAL_SECONDS), and the
    # witness's checkpoint signed over them: the verify below checks the chains against it.
    sweep_started = time.perf_counter()
    swept = await client.execute_workflow(
        HistoryArchiveWorkflow.run,
        ArchiveSweepInput(),
        id=f"{SCHEDULE_ID}-demo",
        task_queue=settings.temporal_task_queue,
        execution_timeout=timedelta(minutes=30),
    )
    sweep_seconds = time.perf_counter() - sweep_started
    verified, _ = await verify_live(client, sessions, settings, client.data_converter)
    checks = Table("check", "result", title="Checks")
    checks.add_row(
        "paid per household = ledger posting = policy amount",
        "ok" if not mismatches else f"{len(mismatches)} mismatches",
    )
    checks.add_row(
        "ledger: balanced, no source below zero, totals = transfers",
        "ok" if not ledger_problems else "; ".join(ledger_problems),
    )
    checks.add_row(
        "audit chain",
        f"verified: {chain.rows} rows, {chain.households} households" if chain.ok else f"BROKEN at {chain.first_break}",
    )
    checks.add_row(
        "list totals",
        f"{totals['new_builds']} new builds, {totals['repairs']} repairs, {_dong(totals['paid'])} đồng paid",
    )
    checks.add_row(
        "reconciliation per source, district, decision",
        "balanced to the đồng" if rec.balanced else f"{len(rec.problems)} differences",
    )
    checks.add_row("temporal workflow list --query \"Stage='closed'\"", f"{closed.count} workflows")
    checks.add_row(
        "archive: closed histories copied out of Temporal",
        f"{swept.archived_now} copied in {sweep_seconds:.1f} s, {swept.already} before, {swept.waiting} "
        f"waiting; witness checkpoint {swept.checkpoint_seq or '-'} signed",
    )
    checks.add_row(
        "audit verify: histories × audit log × ledger",
        f"{len(verified.discrepancies)} discrepancies over {verified.transitions} steps, "
        f"{verified.households} households",
    )
    out.print(checks)
    for m in mismatches[:10]:
        err.print(f"[red]{m}[/]")
    out.rule("[bold]Where to look next")
    out.print(f"Temporal Web UI:  {settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows")
    out.print('Environment:      eval "$(python starter.py stack env)"')
    out.print('                  then: temporal workflow list --query "Stage=\'closed\'"; psql "$DATABASE_URL"')
    out.print("Households:       python starter.py list --stage closed --district 'Lộc Bình'")
    out.print(f"One household:    python starter.py status {example}")
    out.print("Report:           python starter.py report [--json] [--csv DIR] [--xlsx FILE]")
    out.print(f"Excel:            {xlsx}")
    out.print("Funds:            python starter.py finance sources")
    out.print(f"Audit:            python starter.py audit timeline {example} --lang en")
    out.print("Archive:          python starter.py archive status (retention, archived, waiting)")
    out.print("                  python starter.py audit export DIR, then audit replay / verify --from DIR")
    web = Stack(settings).web()
    out.print(f"Web app:          {web.url}  (API: {web.url}/docs)")
    if logins:
        table = Table("who", "user", "password (new on every demo run)", "what they do", title="Sign in as")
        for row in logins:
            table.add_row(*row)
        out.print(table)
    out.print("Stop everything:  python starter.py stack down")
    if mismatches or ledger_problems or not chain.ok or not rec.balanced or not verified.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    try:
        app()
    except StackError as e:
        err.print(f"[bold red]stack[/]: {e}")
        sys.exit(1)
    except PayloadKeyError as e:
        err.print(f"[bold red]payload keys[/]: {e}")
        sys.exit(1)
