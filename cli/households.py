"""The officers' commands on households: import an approved list, take a step, read a household's state and
list them from the read model. Every `--as USER` is proved first (cli/credentials.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from archive.source import open_archive
from cli.command import command, database, err, out
from cli.credentials import PASSWORD_STDIN, TOKEN_STDIN, sign_in
from core.client import connect
from core.formatting import amount, day, dong, moment
from core.matching import key_if_present
from core.settings import Settings
from core.signing import load_ring
from db import households
from models.finance import Milestone, PayoutResult
from models.household import Stage, Step
from models.vocabulary import stage_name
from operations.actions import household_state_from, take_step
from operations.csv_list import template_xlsx
from operations.imports import ImportRejected, import_file

app = typer.Typer()
# `starter.py households template`: the group the list's own commands may grow in.
lists = typer.Typer(help="The approved list's file: the template to fill in")
app.add_typer(lists, name="households")


@app.command("import")
@command
async def import_list(
    settings: Settings,
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="The approved list: Excel .xlsx, or CSV/TXT (, ; or tab; UTF-8 or 1258)"
    ),
    as_user: str = typer.Option(..., "--as", help="User id of the officer importing"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Import an approved list: every row is checked; any problem and nothing is imported.

    The import is signed by this front door for the officer who proved who they are (the key ring is read
    once the list is found good)."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        client = await connect(settings, lazy=True)  # not contacted until the list has been registered
        try:
            report = await import_file(
                sessions,
                client,
                settings.temporal_task_queue,
                file,
                as_user,
                signer=lambda: load_ring(settings),
                match_key=key_if_present(settings.match_key_path),
            )
        except ImportRejected as rejected:
            err.print(f"[bold red]{file.name} rejected[/]: {len(rejected.problems)} problem(s); nothing was imported")
            for p in rejected.problems:
                err.print(f"  {p}")
            raise typer.Exit(2) from None
    out.print(report.describe(file.name))


@app.command("act")
@command
async def act(
    settings: Settings,
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
    detail: list[str] = typer.Option(
        [],
        "--set",
        "-s",
        help="A field of the step's own input, NAME=VALUE (repeatable; dotted for a verification's findings): "
        "-s findings.roof=non_durable, -s place='Nhà văn hoá thôn', -s objection=9, -s kind=support_type",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Take one step on a household, signed by this front door for the user who proved who they are. The
    engine refuses what the rules do not allow."""
    details = _details(detail)
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        client = await connect(settings)
        result = await take_step(
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
            details=details,
        )
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    money = f", {dong(result.amount)}" if getattr(result, "amount", None) else ""
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


def _details(pairs: list[str]) -> dict:
    """`--set` pairs as the step input's fields (the input model judges the values)."""
    details: dict = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{pair!r}: write NAME=VALUE", param_hint="--set")
        *outer, last = name.strip().split(".")
        into = details
        for part in outer:
            into = into.setdefault(part, {})
            if not isinstance(into, dict):
                raise typer.BadParameter(f"{name}: {part} is given a value and fields", param_hint="--set")
        into[last] = value
    return details


@app.command("status")
@command
async def status(settings: Settings, code: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """A household's stage, money and timeline, from its workflow."""
    client = await connect(settings)
    async with database(settings) as sessions:  # a closed file Temporal no longer holds: from the archive
        state, where = await household_state_from(
            client, code, sessions=sessions, archive=open_archive(sessions, settings)
        )
    if where == "archive":
        err.print(f"{state.household_code}: read from the archive (Temporal's retention has removed its history)")
    if as_json:
        print(state.model_dump_json(indent=2))
        return
    out.print(
        f"[bold]{state.household_code}[/] — stage [bold]{state.stage.value}[/] ({stage_name(state.stage)}) "
        f"since {moment(state.stage_since)}; policy {state.policy_version}"
    )
    out.print(
        f"entitlement {dong(state.entitlement)} · reserved {dong(state.reserved)} · paid {dong(state.paid)}"
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
                amount(t.amount),
                t.status.value,
                " + ".join(f"{p.source} {amount(p.amount)}" for p in t.pieces),
                t.authorised_by or "",
                t.released_by or "",
                str(t.attempts),
                t.payment_id or "",
            )
        out.print(tranches)
    table = Table("#", "step", "from → to", "when (UTC+7)", "who", "evidence", "reason", "đồng")
    for e in state.timeline:
        step = f"{e.step.value} (tranche {e.tranche})" if e.tranche else e.step.value
        table.add_row(
            str(e.seq),
            step,
            f"{e.from_stage.value} → {e.to_stage.value}",
            moment(e.at, seconds=True),
            f"{e.user_id} ({e.role}, {e.agency})",
            ", ".join(e.evidence),
            e.reason or "",
            amount(e.amount) if e.amount else "",
        )
    out.print(table)


@app.command("list")
@command
async def list_households(
    settings: Settings,
    stage: Stage | None = typer.Option(None),
    district: str | None = typer.Option(None),
    limit: int = typer.Option(1000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Households from the read model, filtered by stage and district."""
    async with database(settings) as sessions, sessions() as session:
        rows = await households.list_rows(session, stage=stage.value if stage else None, district=district, limit=limit)
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
            day(r.stage_since),
            amount(r.reserved),
            amount(r.paid),
        )
    out.print(table)


@lists.command("template")
def template(
    out_path: Path = typer.Option(Path("mau-danh-sach.xlsx"), "--out", dir_okay=False, help="Where to write it"),
) -> None:
    """Write the list's template: Vietnamese headers, one example row, the CCCD column formatted as text."""
    out_path.write_bytes(template_xlsx())
    out.print(f"{out_path}: the approved list's template (fill in the first sheet; the example row imports as it is)")
