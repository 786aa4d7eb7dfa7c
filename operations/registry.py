"""Other programmes' beneficiary lists, as Finance or the list officers use them: a list imported (checked
whole, stored as keyed hashes of CCCD), our households keyed, the matches reported, our own keyed hashes
exported for another programme.

A province paid households twice that another programme (CT-135, NQ-33, …) had already housed. Programmes
exchange lists as HMAC-SHA256 of CCCD under a key they share (core/matching.py): a list comes either with
plain numbers (a `cccd` column, hashed here and never stored) or already hashed by the other programme
(`cccd_hmac`). Each registered household has its keyed hash (`household_match_keys`, written when its list is
registered), so the approval step finds a match by a join, without the key. Whatever the front door, this is
the one way each of these is done."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from core import matching
from core.errors import Refusal
from core.formatting import today
from db import policy as policy_db
from db import registry as registry_db
from db import users
from db.engine import Sessions
from db.registry import Beneficiary, MatchRow
from models.actor import Actor
from operations.tables import Problem, TableRefused, read_table

log = structlog.get_logger(__name__)

PROGRAMME = re.compile(r"^[A-Z0-9][A-Z0-9./_-]{0,31}$")  # as migration 0017 checks it: CT-135, NQ-33, 167/2008

# The columns a list may have, in English or Vietnamese (compared case- and accent-insensitively, spaces and
# underscores alike): one of `cccd` (plain numbers) or `cccd_hmac` (keyed hashes), then optional year and note.
COLUMNS: dict[str, tuple[str, ...]] = {
    "cccd": ("cccd", "số cccd", "so cccd", "số căn cước", "căn cước công dân"),
    "cccd_hmac": ("cccd_hmac", "hmac", "cccd hmac"),
    "year": ("year", "supported_year", "năm hỗ trợ", "năm"),
    "note": ("note", "ghi chú"),
}


class ListRefused(Exception):
    """The list was refused whole: `problems` by line and field; nothing was written."""

    def __init__(self, problems: list) -> None:
        super().__init__(f"{len(problems)} problem(s) in the list")
        self.problems = problems


@dataclass(frozen=True)
class Imported:
    list_id: int
    programme: str
    file_sha256: str
    rows: int
    added: int  # keyed hashes new to the programme (the others an earlier list of it named already)
    matched: int  # households of ours the programme's lists name (this one and those before)
    new: bool  # False: this very file was imported for this programme before; nothing written

    def describe(self, file_name: str) -> str:
        if not self.new:
            return (
                f"{file_name}: already imported for {self.programme} (list {self.list_id}, same file): nothing "
                f"written; {self.matched} of our households are on the programme's lists"
            )
        return (
            f"{file_name}: list {self.list_id} of {self.programme}, {self.rows} beneficiaries ({self.added} new to "
            f"the programme); {self.matched} of our households are on the programme's lists (sha256 {self.file_sha256})"
        )


def _fold(text: str) -> str:
    """A header as compared: NFC, lower case, spaces and underscores as one space."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().replace("_", " ").split())


_ALIASES = {_fold(alias): name for name, aliases in COLUMNS.items() for alias in aliases}


def normalise_programme(code: str) -> str:
    value = code.strip().upper()
    if not PROGRAMME.match(value):
        raise Refusal(
            "InvalidProgramme", f"{code!r} is not a programme code (letters, digits and . / - _: CT-135, NQ-33)"
        )
    return value


def _columns(header: list[str]) -> tuple[dict[str, str], list[Problem]]:
    """Which header names each of our columns, and the problems with the header."""
    found: dict[str, str] = {}
    problems = []
    for name in header:
        ours = _ALIASES.get(_fold(name))
        if ours is None:
            continue
        if ours in found:
            problems.append(Problem(1, name, f"a second {ours} column (the first is {found[ours]!r})"))
        else:
            found[ours] = name
    if "cccd" in found and "cccd_hmac" in found:
        problems.append(Problem(1, found["cccd_hmac"], "a list has either cccd or cccd_hmac, not both"))
    elif "cccd" not in found and "cccd_hmac" not in found:
        problems.append(Problem(1, "header", "no cccd column (plain numbers) nor cccd_hmac column (keyed hashes)"))
    return found, problems


def _year(text: str) -> int:
    m = re.fullmatch(r"(\d{4})(?:\.0+)?", text)
    if not m:
        raise ValueError(f"{text!r} is not a year")
    year = int(m.group(1))
    if not 1945 <= year <= today().year:
        raise ValueError(f"{year} is not a year the support could have been given")
    return year


def parse_list(data: bytes, file_name: str, key: bytes | None) -> list[Beneficiary]:
    """The list's rows as keyed hashes, every row checked; ListRefused with every problem otherwise. A plain
    list needs the key (a plain number is hashed at once, never kept)."""
    try:
        table = read_table(data, file_name)
    except TableRefused as refused:
        raise ListRefused(list(refused.problems)) from None
    columns, problems = _columns(table.header)
    if problems:
        raise ListRefused(problems)
    plain = "cccd" in columns
    if plain and key is None:
        raise Refusal("NoMatchKey", "a list of plain CCCD numbers is hashed with the match key: none is configured")
    id_column = columns["cccd" if plain else "cccd_hmac"]
    out: list[Beneficiary] = []
    seen: dict[str, int] = {}
    for line, cells in table.rows:
        value = cells.get(id_column, "")
        try:
            h = matching.digest(key, value) if plain else matching.normalise_hmac(value)
        except ValueError as err:
            problems.append(Problem(line, id_column, f"{value!r}: {err}" if value else "empty"))
            h = None
        if h is not None:
            if h in seen:
                same = "CCCD" if plain else "keyed hash"
                problems.append(Problem(line, id_column, f"the same {same} as line {seen[h]}"))
            else:
                seen[h] = line
        year = None
        if (text := cells.get(columns.get("year", ""), "")) != "":
            try:
                year = _year(text)
            except ValueError as err:
                problems.append(Problem(line, columns["year"], str(err)))
        note = cells.get(columns.get("note", ""), "") or None
        if h is not None:
            out.append(Beneficiary(cccd_hmac=h, supported_year=year, note=note))
    if not table.rows:
        problems.append(Problem(1, "header", "the list has no rows"))
    if problems:
        raise ListRefused(problems)
    return out


async def _actor(session, user_id: str, what: str) -> Actor:
    """The user, if today's policy gives their role Finance's powers or the list officers' (import)."""
    actor = await users.require_actor(session, user_id)
    current = await policy_db.policy_today(session)
    roles = set(current.finance_roles) | set(current.import_roles)
    if actor.role not in roles:
        raise Refusal(
            "RoleNotAllowed",
            f"role {actor.role!r} may not {what} (finance_roles and import_roles of policy {current.version}: "
            f"{', '.join(sorted(roles))})",
        )
    return actor


async def import_list(
    owner: Sessions,
    data: bytes,
    file_name: str,
    *,
    programme: str,
    user_id: str,
    key: bytes | None,
    name: str | None = None,
) -> Imported:
    """Import another programme's list, checked whole first, by `user_id` (a Finance or list officer the front
    door authenticated). `owner`: the schema owner's sessions (the application's login only reads the lists).
    The same file imported again for the same programme writes nothing."""
    code = normalise_programme(programme)
    rows = parse_list(data, file_name, key)
    digest = hashlib.sha256(data).hexdigest()
    async with owner() as session, session.begin():
        actor = await _actor(session, user_id, "import another programme's list")
        await registry_db.lock_lists(session)  # one list at a time: the same file twice waits, then finds it
        stored = await registry_db.find_list(session, code, digest)
        if stored is not None:
            return Imported(
                stored.id, code, digest, stored.row_count, 0, await registry_db.list_matches(session, stored.id), False
            )
        list_id = await registry_db.add_list(
            session,
            programme=code,
            name=(name or "").strip() or None,
            file_name=file_name,
            file_sha256=digest,
            row_count=len(rows),
            imported_by=actor.user_id,
        )
        added = await registry_db.add_beneficiaries(session, list_id, code, rows)
        matched = await registry_db.list_matches(session, list_id)
    log.info(
        "other_programme_list_imported",
        programme=code,
        list_id=list_id,
        file_sha256=digest,
        rows=len(rows),
        added=added,
        matched=matched,
        by=actor.user_id,
    )
    return Imported(list_id, code, digest, len(rows), added, matched, True)


async def key_households(session, key: bytes, households: Iterable[tuple[str, str]]) -> int:
    """Store the keyed hash of each (code, CCCD), in the caller's transaction (the list import's, after it
    registers its households); returns how many were new. A household keyed before keeps its hash."""
    return await registry_db.add_household_keys(
        session, {code: matching.digest(key, cccd) for code, cccd in households}
    )


async def key_all_households(sessions: Sessions, key: bytes, chunk: int = 5000) -> int:
    """Key every registered household not keyed yet (those registered before the registry existed), a chunk
    per transaction; returns how many were keyed. Running it again keys nothing."""
    total = 0
    while True:
        async with sessions() as session, session.begin():
            todo = await registry_db.unkeyed_households(session, chunk)
            if not todo:
                return total
            total += await key_households(session, key, todo)
        log.info("households_keyed", so_far=total)


async def report(
    sessions: Sessions, user_id: str, *, programme: str | None = None, open_only: bool = False
) -> list[MatchRow]:
    """Every household of ours on another programme's list, open or overridden (by whom, why, when)."""
    async with sessions() as session:
        await _actor(session, user_id, "read the double-support matches")
        return await registry_db.matches_report(
            session, programme=normalise_programme(programme) if programme else None, open_only=open_only
        )


REPORT_HEADER = [
    "Mã hộ",
    "Huyện",
    "Xã",
    "Giai đoạn",
    "Chương trình",
    "Danh sách",
    "Năm hỗ trợ",
    "Ghi chú",
    "Trạng thái",
    "Người bỏ qua",
    "Lý do",
    "Thời điểm",
]


def report_rows(rows: list[MatchRow]) -> list[list]:
    """The report's cells, in REPORT_HEADER's order (the rich table and the workbook alike)."""
    return [
        [
            r.household_code,
            r.district or "",
            r.commune,
            r.stage,
            r.programme,
            f"{r.list_id} ({r.file_name})",
            r.supported_year or "",
            r.note or "",
            "đang chặn" if r.open else "đã bỏ qua",
            r.overridden_by or "",
            r.reason or "",
            r.overridden_at.isoformat(timespec="seconds") if r.overridden_at else "",
        ]
        for r in rows
    ]


def write_xlsx(rows: list[MatchRow], path: Path) -> Path:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = "Trùng hỗ trợ"
    ws.append(REPORT_HEADER)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in report_rows(rows):
        ws.append(row)
    ws.freeze_panes = "B2"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


async def export_keys(sessions: Sessions, user_id: str, path: Path) -> int:
    """Write our households' keyed hashes as CSV (one `cccd_hmac` column, sorted: no code, name or place),
    for another programme holding the same key to match against its own list; returns how many."""
    async with sessions() as session:
        actor = await _actor(session, user_id, "export the households' keyed hashes")
        keys = await registry_db.household_keys(session)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["cccd_hmac"])
    writer.writerows([k] for k in keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")
    log.info("household_keys_exported", count=len(keys), file=path.name, by=actor.user_id)
    return len(keys)
