"""`starter.py audit …`: the auditors' and inspectors' commands.

    audit export DIR                      histories + audit log + ledger + manifest of hashes
    audit replay [--from DIR]             replay every history against the current code
    audit timeline CODE [--lang vi|en] [--json] [--from DIR]
    audit verify [--from DIR] [--code C]… [--json]
    audit chain [CODE]                    recompute the audit log's hash chains
    audit restore [CODE…|--all] --as USER --reason TEXT [--dry-run]
                                          re-record, from the histories, steps a database restore lost

Histories come from the Temporal server while it holds them and from the engine's archive after (its
retention removes closed ones), or with --from from an export (no server needed). Payloads are opened with
the configured keys or --key-file; without a key, timelines show ciphertext markers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.progress import Progress
from rich.table import Table
from temporalio.client import WorkflowHistory

from archive.source import ALL_WORKFLOWS, HOUSEHOLDS, Histories, open_archive
from auditor import archive as archive_mod
from auditor import restore as restore_mod
from auditor import timeline as tl
from auditor.history import read_trail, read_trails
from auditor.live import verify_live
from auditor.records import household_workflow_ids
from auditor.replay import replay, replay_files
from auditor.verify import KINDS, verify
from cli.command import command, database, err, fail, out, progress
from cli.credentials import PASSWORD_STDIN, TOKEN_STDIN, sign_in
from core.client import connect, key_ring
from core.codec import KeyRing, PayloadKeyError, read_ring, with_codec
from core.converter import DATA_CONVERTER
from core.formatting import amount, dong, moment
from core.settings import Settings
from db import audit
from db.engine import Sessions
from finance.channel import HttpBank
from models.household import workflow_id_for

app = typer.Typer(no_args_is_help=True, help="Checks for auditors and inspectors: export, replay, timeline, verify")

FROM = typer.Option(None, "--from", help="An export folder (from 'audit export') instead of the live servers")
KEY_FILE = typer.Option(None, "--key-file", help="Payload keys to open the histories (default: the configured ones)")
COLUMNS = {
    "vi": ("Thời gian", "Sự việc", "Người thực hiện", "Vai trò", "Cơ quan", "Căn cứ", "Lý do", "Tiền"),
    "en": ("Time (UTC+7)", "What", "Who", "Role", "Agency", "Evidence", "Reason", "Money"),
}
NO_KEY = typer.Option(False, "--no-key", help="Read without any key: personal data stays ciphertext")


def _ring(settings: Settings, key_file: Path | None, no_key: bool = False) -> KeyRing | None:
    """The keys to open payloads with: --key-file, else the configured ones; None with --no-key or none."""
    if no_key:
        return None
    try:
        return read_ring(key_file) if key_file else key_ring(settings, required=False)
    except (OSError, PayloadKeyError) as e:
        fail(f"payload keys: {e}")


def _codes(codes: list[str] | None) -> list[str] | None:
    return [c.strip().upper() for c in codes] if codes else None


def _progress() -> Progress:
    return progress(console=err, transient=True)


def _open_archive(directory: Path) -> archive_mod.Archive:
    try:
        return archive_mod.Archive.open(directory)
    except (OSError, ValueError) as e:
        fail(str(e))


@app.command("export")
@command(refuses=(FileExistsError,))
async def export(settings: Settings, directory: Path = typer.Argument(..., help="An empty or new folder")) -> None:
    """Write every workflow history (sealed, as stored), the audit log, the ledger's household transfers and
    the policy versions, with a manifest of SHA-256 hashes (and SHA256SUMS for sha256sum -c)."""
    client = await connect(settings, keys_required=False)  # histories are written as stored: sealed
    async with database(settings) as sessions:
        with _progress() as bar:
            task = bar.add_task("histories", total=None)
            result = await archive_mod.export(
                client,
                sessions,
                directory,
                namespace=settings.temporal_namespace,
                archive=open_archive(sessions, settings),
                on_total=lambda n: bar.update(task, total=n),
                on_done=lambda: bar.advance(task),
            )
    out.print(
        f"exported {result.histories} histories ({result.households} households), {result.audit_rows} audit "
        f"rows, {result.transfers} ledger transfers to {directory}"
    )
    out.print(
        f"payloads sealed with key(s): {', '.join(result.key_ids) or 'none'}; manifest SHA-256 {result.manifest_sha256}"
    )
    # 'audit verify --from' checks signatures against the keys in the export: compare them with the published ones.
    out.print(f"public signing keys exported: {', '.join(result.signing_key_ids) or 'none'}")
    if result.from_archive:
        out.print(f"{result.from_archive} histories taken from the archive (Temporal no longer holds them)")
    for wid in result.missing:
        err.print(f"[yellow]no history[/] for {wid}: neither on the Temporal server nor in the archive")


def _archive_files(
    arch: archive_mod.Archive, query: str, codes: list[str] | None, *, binary: bool = False
) -> list[tuple[str, Path]]:
    wanted = set(household_workflow_ids(codes)) if codes else None
    files = [(w, p) for w, p in arch.history_files(binary=binary) if wanted is None or w in wanted]
    return [(w, p) for w, p in files if w.startswith("household-")] if query == HOUSEHOLDS else files


@dataclass
class Read:
    """The histories a command reads: how many, the iterator, and where they come from."""

    total: int
    histories: AsyncIterator[WorkflowHistory]
    export: archive_mod.Archive | None = None  # with --from
    live: Histories | None = None  # Temporal, then the archive
    sessions: Sessions | None = None  # the live database (None with --from)

    def report_missing(self) -> None:
        for wid in self.live.missing if self.live else []:
            err.print(f"[yellow]no history[/] for {wid}: neither on the Temporal server nor in the archive")
        if self.live and self.live.from_archive:
            err.print(f"{self.live.from_archive} histories read from the archive (Temporal no longer holds them)")


@asynccontextmanager
async def _histories(settings: Settings, source: Path | None, query: str, codes: list[str] | None):
    """The histories of an export (--from), or the live ones: Temporal's, else the archive's."""
    if source:
        arch = _open_archive(source)
        files = _archive_files(arch, query, codes)

        async def read() -> AsyncIterator[WorkflowHistory]:
            for history in arch.histories(files):
                yield history

        yield Read(len(files), read(), export=arch)
        return
    client = await connect(settings, keys_required=False)
    async with database(settings) as sessions:
        live = Histories(client, open_archive(sessions, settings))
        ids = household_workflow_ids(codes) if codes else await live.ids(query)
        yield Read(len(ids), live.each(ids), live=live, sessions=sessions)


@app.command("replay")
@command
async def replay_cmd(
    settings: Settings,
    source: Path | None = FROM,
    codes: list[str] = typer.Option(None, "--code", help="Only these households"),
    jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", min=1, help="Processes replaying an export"),
    key_file: Path | None = KEY_FILE,
    sandbox: bool = typer.Option(
        False,
        "--sandbox",
        help="Replay inside the workflow sandbox (slower; catches "
        "calls that could become non-deterministic, as the test suite does)",
    ),
) -> None:
    """Replay histories against the current workflow code; name every household whose history the code no
    longer reproduces (non-determinism), with the reason. Exit 1 when any does."""
    ring = _ring(settings, key_file)
    if ring is None:
        fail("replay opens every payload: give the payload keys (PAYLOAD_KEYS, the key file or --key-file)")
    report, seconds, problems = await _replay(settings, ring, source, _codes(codes), jobs, sandbox)
    for p in problems:
        err.print(f"[yellow]{p}[/]")
    rate = report.replayed / seconds if seconds else 0
    out.print(
        f"replayed {report.replayed} histories against the current code in {seconds:.1f} s ({rate:.1f}/s): "
        f"{len(report.failures)} not reproduced"
    )
    if report.failures:
        table = Table("workflow", "error", "reason", title="Histories the current code does not reproduce")
        for f in report.failures:
            table.add_row(f.workflow_id, f.kind, f.reason[:300])
        out.print(table)
    if report.failures or problems:
        raise typer.Exit(1)


async def _replay(
    settings: Settings, ring: KeyRing, source: Path | None, codes: list[str] | None, jobs: int, sandbox: bool
):
    """The replay's report, its seconds, and the problems met (an altered export, histories not found)."""
    started = time.perf_counter()
    if source:
        arch = _open_archive(source)
        # The binary copies: parsing JSON costs more than replaying; 'audit verify' proves them equal.
        files = _archive_files(arch, ALL_WORKFLOWS, codes, binary=True)
        with _progress() as bar:
            task = bar.add_task(f"replaying ({jobs} processes)", total=len(files))
            report = await replay_files(
                files, ring.dump(), jobs=jobs, sandbox=sandbox, on_done=lambda n: bar.advance(task, n)
            )
        return report, time.perf_counter() - started, [f"export: {p}" for p in arch.problems]
    async with _histories(settings, None, ALL_WORKFLOWS, codes) as read:
        with _progress() as bar:
            task = bar.add_task("replaying", total=read.total)
            report = await replay(
                read.histories, with_codec(DATA_CONVERTER, ring), sandbox=sandbox, on_done=lambda: bar.advance(task)
            )
        if read.live.from_archive:
            err.print(f"{read.live.from_archive} histories read from the archive (Temporal no longer holds them)")
        missing = [f"no history for {w}: neither on the Temporal server nor in the archive" for w in read.live.missing]
    return report, time.perf_counter() - started, missing


@app.command("timeline")
@command
async def timeline_cmd(
    settings: Settings,
    code: str = typer.Argument(..., help="Household code"),
    lang: str = typer.Option("vi", "--lang", help="vi | en"),
    as_json: bool = typer.Option(False, "--json"),
    source: Path | None = FROM,
    key_file: Path | None = KEY_FILE,
    no_key: bool = NO_KEY,
) -> None:
    """Who did what, when, in which role and agency, with which evidence and reason, and what money moved:
    from the household's history alone."""
    if lang not in ("vi", "en"):
        fail(f"--lang {lang!r}: use vi or en")
    code = code.strip().upper()
    converter = with_codec(DATA_CONVERTER, _ring(settings, key_file, no_key))
    if source:
        arch = _open_archive(source)
        match = [p for w, p in arch.history_files() if w == workflow_id_for(code)]
        if not match:
            fail(f"household {code}: no history in the export {source.name}")
        history = archive_mod.read_history(workflow_id_for(code), match[0])
    else:
        client = await connect(settings, keys_required=False)
        async with database(settings) as sessions:
            found = await Histories(client, open_archive(sessions, settings)).get(workflow_id_for(code))
        if found is None:
            fail(f"household {code}: no workflow history, neither on the Temporal server nor in the archive")
        if found.where == "archive":
            err.print(f"{code}: read from the archive (Temporal's retention has removed its history)")
        history = found.history
    trail = await read_trail(history, converter)
    if as_json:
        print(json.dumps(tl.as_json(trail), ensure_ascii=False, indent=1, default=str))
        return
    head = Table(show_header=False, box=None)
    for label, value in tl.header(trail, lang):  # type: ignore[arg-type]
        head.add_row(f"[bold]{label}[/]", str(value))
    out.print(head)
    table = Table(*COLUMNS[lang], show_lines=False)
    for line in tl.lines(trail, lang):  # type: ignore[arg-type]
        table.add_row(
            line.at,
            line.what,
            line.who,
            line.role,
            line.agency,
            ", ".join(line.evidence),
            line.reason or "",
            line.money,
        )
    out.print(table)


@app.command("verify")
@command
async def verify_cmd(
    settings: Settings,
    source: Path | None = FROM,
    codes: list[str] = typer.Option(None, "--code", help="Only these households"),
    as_json: bool = typer.Option(False, "--json"),
    key_file: Path | None = KEY_FILE,
) -> None:
    """Cross-check the Temporal histories, the hash-chained audit log and the ledger, and every step's signature
    against the public signing keys (the database's, or with --from the export's); list every discrepancy.
    Exit 1 when there is any."""
    report = await _verify(settings, source, _codes(codes), with_codec(DATA_CONVERTER, _ring(settings, key_file)))
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=1))
    else:
        out.print(
            f"verified {report.households} households: {report.transitions} steps in the histories, "
            f"{report.audit_rows} audit rows, {report.transfers} ledger transfers; "
            f"{dong(report.amount_checked)} moved, agreed by all three records"
        )
        if report.ok:
            out.print("histories, audit log and ledger agree: 0 discrepancies")
        else:
            table = Table("kind", "household", "where", "detail", title=f"{len(report.discrepancies)} discrepancies")
            for d in report.discrepancies:
                table.add_row(d.kind, d.household, d.where, d.detail)
            out.print(table)
            for kind, n in sorted(report.by_kind().items()):
                out.print(f"  {kind}: {n} — {KINDS[kind]}")
    if not report.ok:
        raise typer.Exit(1)


async def _verify(settings: Settings, source: Path | None, wanted: list[str] | None, converter):
    """The three-way check of an export (--from), or of the live histories, audit log and ledger."""
    if source:
        async with _histories(settings, source, HOUSEHOLDS, wanted) as read:
            with _progress() as bar:
                task = bar.add_task("reading histories", total=read.total)
                trails = await read_trails(read.histories, converter, on_done=lambda: bar.advance(task))
            if not wanted:  # the rest (payout batches) are not in the three-way check; replay reads their copies
                read.export.compare_copies()
            return verify(trails, read.export.records(wanted), archive_problems=read.export.problems)
    client = await connect(settings, keys_required=False)
    async with database(settings) as sessions:
        with _progress() as bar:
            task = bar.add_task("reading histories", total=None)
            report, live = await verify_live(
                client,
                sessions,
                settings,
                converter,
                wanted,
                on_total=lambda n: bar.update(task, total=n),
                on_done=lambda: bar.advance(task),
            )
    if live.from_archive:
        err.print(f"{live.from_archive} histories read from the archive (Temporal no longer holds them)")
    return report


@app.command("chain")
@command
async def chain_cmd(
    settings: Settings, code: str | None = typer.Argument(None, help="One household; all when omitted")
) -> None:
    """Recompute the audit log's hash chains; name the first broken row. Exit 1 when broken."""
    async with database(settings) as sessions, sessions() as session:
        result = await audit.verify_chain(session, code)
    if result.ok:
        out.print(f"audit chain verified: {result.rows} rows over {result.households} households, no break")
    else:
        fail(f"audit chain broken at {result.first_break}")


@app.command("restore")
@command
async def restore_cmd(
    settings: Settings,
    codes: list[str] = typer.Argument(None, help="Household codes (or --all)"),
    every: bool = typer.Option(False, "--all", help="Every household with a workflow history"),
    operator: str = typer.Option(..., "--as", help="The operator (an active admin in the users table)"),
    reason: str = typer.Option(..., "--reason", help="Why (e.g. the restore's ticket and backup)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be re-recorded; write nothing"),
    key_file: Path | None = KEY_FILE,
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """After the database was restored from a backup older than Temporal's state: re-record, in order, each
    step a household's history holds beyond its last audit row, from the history's own records, through the
    engine's write path; each marked restored (by whom, when, from which run). A household whose rows
    contradict its history is refused. Exit 1 when any household is refused."""
    if bool(codes) == every:
        fail("name household codes, or --all")
    # The operator proves who they are (the restore's own check then asks for an admin).
    await sign_in(settings, operator, password_stdin=password_stdin, token_stdin=token_stdin)
    ring = _ring(settings, key_file)
    if ring is None:
        fail("restore reads every record from the histories: give the payload keys")
    async with _histories(settings, None, HOUSEHOLDS, None if every else _codes(codes)) as read:
        with _progress() as bar:
            task = bar.add_task("reading histories", total=read.total)
            trails = await read_trails(
                read.histories, with_codec(DATA_CONVERTER, ring), on_done=lambda: bar.advance(task)
            )
        read.report_missing()
    # As the schema owner, like migrations: the application's role may neither write restore marks nor
    # move the transfers' id sequence, so a worker's login cannot forge a restore.
    async with database(settings, url=settings.owner_asyncpg_url) as sessions:
        report = await restore_mod.restore(
            sessions, trails, operator=operator, reason=reason, channel=HttpBank.name, dry_run=dry_run
        )
    if report.restored:
        verb = "would re-record" if report.dry_run else "re-recorded"
        table = Table(
            "household",
            "seq",
            "step",
            "who",
            "when (UTC+7)",
            "money",
            "audit hash",
            "same hash",
            title=f"{verb} {len(report.restored)} steps",
        )
        for r in report.restored:
            same = "-" if r.audit_hash is None else "yes" if r.same_hash else f"no (ids {r.transfer_ids})"
            table.add_row(
                r.household,
                str(r.seq),
                r.step,
                r.actor,
                moment(r.at),
                amount(r.amount) if r.amount else "",
                (r.audit_hash or r.history_hash)[:16] + "…",
                same,
            )
        out.print(table)
    households = len({r.household for r in report.restored})
    out.print(
        f"{'dry run: ' if report.dry_run else ''}{len(report.restored)} steps over {households} households "
        f"{'to re-record' if report.dry_run else 're-recorded'} by {operator}; {len(report.up_to_date)} "
        f"households had lost nothing; {len(report.refused)} refused"
    )
    for code, e in report.refused:
        err.print(f"[bold red]refused[/] {code}: {e}")
    if report.refused:
        raise typer.Exit(1)
