"""`starter.py registry …`: other programmes' beneficiary lists (keyed hashes of CCCD) — a list imported, our
households keyed, the double-support matches reported, our own keyed hashes exported for another programme.
Every `--as USER` is proved first (cli/credentials.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli.command import command, database, err, fail, out
from cli.credentials import PASSWORD_STDIN, TOKEN_STDIN, sign_in
from core.matching import MatchKeyError, read_key
from core.settings import Settings
from operations import registry

app = typer.Typer(no_args_is_help=True, help="Other programmes' beneficiary lists and double-support matches")


def _key(settings: Settings, *, required: bool) -> bytes | None:
    """The match key (MATCH_KEY_PATH); None when there is none and the command can do without."""
    path = settings.match_key_path
    if not path.exists() and not required:
        return None
    try:
        return read_key(path)
    except MatchKeyError as e:
        fail(f"{e} ('keys match-key' makes one; the programmes must share the same key)")


@app.command("import")
@command
async def registry_import(
    settings: Settings,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The list: .xlsx or CSV (, ; or tab)"),
    programme: str = typer.Option(..., "--programme", help="The other programme's code: CT-135, NQ-33, …"),
    name: str = typer.Option(None, "--name", help="The list's name, as the programme calls it"),
    as_user: str = typer.Option(..., "--as", help="A Finance or list officer"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Import another programme's beneficiary list: a `cccd` column (plain numbers, hashed with the match key
    and never stored) or a `cccd_hmac` column (hashed by the programme with the shared key); optional
    `year`/`năm hỗ trợ` and `note`/`ghi chú`. Every row is checked; any problem and nothing is imported."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    key = _key(settings, required=False)
    async with database(settings, url=settings.owner_asyncpg_url) as owner:  # only the owner writes the lists
        try:
            imported = await registry.import_list(
                owner, file.read_bytes(), file.name, programme=programme, user_id=as_user, key=key, name=name
            )
        except registry.ListRefused as refused:
            err.print(f"[bold red]{file.name} rejected[/]: {len(refused.problems)} problem(s); nothing was imported")
            for p in refused.problems:
                err.print(f"  {p}")
            raise typer.Exit(2) from None
    out.print(imported.describe(file.name))


@app.command("report")
@command
async def registry_report(
    settings: Settings,
    as_user: str = typer.Option(..., "--as", help="A Finance or list officer"),
    programme: str = typer.Option(None, "--programme", help="Only this programme's matches"),
    open_only: bool = typer.Option(False, "--open", help="Only the matches no override has set aside"),
    xlsx: Path = typer.Option(None, "--xlsx", help="Write the report as an Excel workbook"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Our households on another programme's list: open (approval is refused, rule DoubleSupport) or set
    aside by an override (who, why, when)."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        rows = await registry.report(sessions, as_user, programme=programme, open_only=open_only)
    table = Table(*registry.REPORT_HEADER, title="Hộ trùng danh sách chương trình khác (double support)")
    for cells in registry.report_rows(rows):
        table.add_row(*[str(c) for c in cells])
    out.print(table)
    still = sum(r.open for r in rows)
    out.print(f"{len(rows)} match(es): {still} open, {len(rows) - still} overridden")
    if xlsx:
        err.print(f"wrote {registry.write_xlsx(rows, xlsx)}")


@app.command("export-keys")
@command
async def registry_export_keys(
    settings: Settings,
    out_file: Path = typer.Option(..., "--out", dir_okay=False, help="The CSV to write (one cccd_hmac column)"),
    as_user: str = typer.Option(..., "--as", help="A Finance or list officer"),
    password_stdin: bool = PASSWORD_STDIN,
    token_stdin: bool = TOKEN_STDIN,
) -> None:
    """Write our households' keyed hashes (no code, name or place) for another programme that holds the same
    key to match against its list."""
    await sign_in(settings, as_user, password_stdin=password_stdin, token_stdin=token_stdin)
    async with database(settings) as sessions:
        count = await registry.export_keys(sessions, as_user, out_file)
    out.print(f"{count} keyed hashes written to {out_file.name}")


@app.command("key-households")
@command
async def registry_key_households(settings: Settings) -> None:
    """Once, for the households registered before the registry: store each one's keyed hash (the list import
    keys the households it registers). Running it again keys nothing; it needs the match key."""
    key = _key(settings, required=True)
    async with database(settings) as sessions:
        count = await registry.key_all_households(sessions, key)
    out.print(f"{count} household(s) keyed" if count else "every household was keyed already")
