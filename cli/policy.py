"""`starter.py policy …`: who may take which step, the SLA days and the steps that need different people —
versioned policy data, shown, and applied to every household in flight."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.table import Table

from cli.command import command, database, fail, out
from cli.credentials import PASSWORD_STDIN, TOKEN_STDIN, sign_in
from core.client import connect
from core.formatting import day, today
from core.settings import Settings
from core.signing import load_ring
from db.policy import policy_today
from models.household import FORWARD, Step
from models.policy import WorkflowPolicy
from operations.policies import add_version, push

app = typer.Typer(no_args_is_help=True, help="Who may take which step: versioned policy data")


@app.command("show")
@command
async def policy_show(settings: Settings, as_json: bool = typer.Option(False, "--json")) -> None:
    """The workflow policy in force today: roles per step, SLA days, steps that need different people."""
    async with database(settings) as sessions, sessions() as session:
        current = await policy_today(session)
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


@app.command("apply")
@command
async def policy_apply(
    settings: Settings,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Policy JSON (see 'policy show --json')"),
    as_user: str = typer.Option(..., "--as", help="An officer with a policy admin role"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
    effective_from: str = typer.Option(None, help="YYYY-MM-DD; default today"),
) -> None:
    """Store a new policy version and apply it to every household in flight."""
    try:
        new = WorkflowPolicy.model_validate_json(file.read_bytes())
        start = date.fromisoformat(effective_from) if effective_from else today()
    except (ValidationError, ValueError) as e:
        fail(f"{file.name}: {e}")
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings, url=settings.owner_asyncpg_url) as owner:  # only the owner inserts policies
        await add_version(owner, new, start, as_user)
    async with database(settings) as sessions:
        report = await push(await connect(settings), sessions, new, as_user, signer=load_ring(settings))
    out.print(
        f"policy {new.version} stored (effective {day(start)}); applied to {report.applied} households in flight"
        + (f", refused by {report.refused}" if report.refused else "")
    )
