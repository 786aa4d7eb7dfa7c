"""`starter.py reform …`: the 1 July 2025 reform of local government — the dated gazetteer loaded, the two-tier
policy published, the reorganisation applied to every household in flight, the district-held money handed over."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.command import command, database, fail, out, progress
from cli.credentials import PASSWORD_STDIN, TOKEN_STDIN, sign_in
from core.client import connect
from core.formatting import dong
from core.settings import Settings
from core.signing import load_ring
from db import gazetteer as gazetteer_db
from models.reorganisation import ReorganiseResult
from operations import reform

app = typer.Typer(no_args_is_help=True, help="The 2025 reform: gazetteer, reorganisation, handover of funds")

BASIS = typer.Option("1672/NQ-UBTVQH15", "--basis", help="The reorganisation's legal basis, as the gazetteer names it")
TWO_TIER = reform.TWO_TIER_VERSION


@app.command("load")
@command
async def reform_load(
    settings: Settings,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Gazetteer JSON (data/gazetteer/…)"),
    as_user: str = typer.Option(..., "--as", help="A policy administrator"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Load a gazetteer (units, validity, successions, legal basis): checked whole, stored as a version."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings, url=settings.owner_asyncpg_url) as owner:  # only the owner writes the gazetteer
        loaded = await reform.load_gazetteer(owner, file, as_user)
    what = "loaded" if loaded.new else "already loaded (same file): nothing written"
    out.print(
        f"gazetteer {loaded.version} {what}: {loaded.units} units, reorganisations "
        f"{', '.join(loaded.reorganisations)}; sha256 {loaded.sha256}"
    )


@app.command("apply")
@command
async def reform_apply(
    settings: Settings,
    as_user: str = typer.Option(..., "--as", help="A provincial administrator (a policy admin)"),
    basis: str = BASIS,
    policy_version: str = typer.Option(
        TWO_TIER, "--policy-version", help="The two-tier policy the moved households run under"
    ),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Publish the two-tier policy (once) and move every household in flight to its new unit, signed."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings, url=settings.owner_asyncpg_url) as owner:
        await reform.publish_two_tier(owner, policy_version, as_user)
    async with database(settings) as sessions:
        client = await connect(settings)
        result = await apply_with_progress(
            client, sessions, settings.temporal_task_queue, load_ring(settings), as_user, basis, policy_version
        )
    if result.progress.failed:
        raise typer.Exit(1)


async def apply_with_progress(
    client, sessions, task_queue, signer, user, basis, policy_version, *, console: Console = out
):
    with progress(console=console) as bar:
        task = bar.add_task(f"{basis}: households in flight to their new units", total=None)
        result = await reform.apply_reorganisation(
            client,
            sessions,
            task_queue,
            signer,
            user,
            basis=basis,
            policy_version=policy_version,
            on_progress=lambda p: bar.update(task, total=p.total or None, completed=p.finished),
        )
    print_reorganisation(result, console=console)
    return result


def print_reorganisation(result: ReorganiseResult, *, console: Console = out) -> None:
    p = result.progress
    console.print(
        f"{result.basis} ({result.batch_id}): {p.done} households moved, {p.skipped} skipped (moved or closed "
        f"before), {p.failed} failed, of {p.total}"
    )
    if result.failed:
        table = Table("household", "rule", "message", title="Not moved")
        for i in result.failed:
            table.add_row(i.household_code, i.rule or "", i.message or "")
        console.print(table)


@app.command("handover")
@command
async def reform_handover(
    settings: Settings,
    as_user: str = typer.Option(..., "--as", help="A finance officer"),
    basis: str = BASIS,
    xlsx: Path = typer.Option(None, "--xlsx", help="Write the biên bản bàn giao as an Excel file"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Hand every district-held source to its successor: free money by a ledger transfer, and the record."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        made = await reform.hand_over(sessions, as_user, basis=basis)
    print_handovers(made, basis)
    if xlsx:
        out.print(f"Excel: {reform.write_handover_xlsx(made, xlsx, basis)}")


def print_handovers(items: list[reform.Handover], basis: str, *, console: Console = out) -> None:
    table = Table(*(h for _, h in reform.HANDOVER_COLUMNS[:-1]), title=f"Biên bản bàn giao ({basis})")
    for h in items:
        table.add_row(
            h.source,
            h.from_unit,
            h.to_unit,
            h.to_source,
            *(dong(getattr(h, k)) for k, _ in reform.HANDOVER_COLUMNS[4:-1]),
        )
    console.print(table)
    for h in items:
        for f in h.findings:
            console.print(f"{h.source}: {f}")
        if not h.new:
            console.print(f"{h.source}: handed over before; nothing written")


@app.command("status")
@command
async def reform_status(settings: Settings, basis: str = BASIS) -> None:
    """Households moved under the reorganisation, households still to move, and the handovers made."""
    async with database(settings) as sessions:
        async with sessions() as session:
            if await gazetteer_db.reorganisation(session, basis) is None:
                fail(f"no reorganisation {basis!r} is loaded ('reform load')")
            province = (await gazetteer_db.stored(session)).province
            moved = await gazetteer_db.moved_count(session, basis)
            rows = await gazetteer_db.to_move(session, basis, province, limit=1_000_000)
            left = sum(r.moved_under != basis for r in rows)
        made = await reform.handovers(sessions)
    out.print(f"{basis}: {moved} households moved; {left} in flight not moved yet")
    if made:
        print_handovers(made, basis)
