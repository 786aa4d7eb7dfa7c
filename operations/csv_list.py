"""Reading an approved list (CSV, as exported from Excel) into households, or into a list of problems.

Every row is checked; a problem names its line (the header is line 1) and field. Codes and CCCD numbers
must be unique within the file. Group and support type accept the English values or the Vietnamese terms.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from pydantic import ValidationError

from models.household import Household
from operations.tables import Problem as Problem  # its home is the table reader; importers name it here too

COLUMNS = (
    "code",
    "head_of_household",
    "cccd",
    "province",
    "district",
    "commune",
    "beneficiary_group",
    "support_type",
    "decision_ref",
)
# Columns a list may leave out (older lists have none of them).
OPTIONAL_COLUMNS = ("programme",)
ALL_COLUMNS = COLUMNS + OPTIONAL_COLUMNS

_ALIASES = {
    "beneficiary_group": {
        "người có công": "meritorious",
        "ncc": "meritorious",
        "hộ nghèo": "poor",
        "nghèo": "poor",
        "hộ cận nghèo": "near_poor",
        "cận nghèo": "near_poor",
        "near-poor": "near_poor",
        "thiên tai": "disaster",
        "khác": "other",
    },
    "support_type": {"xây mới": "new_build", "new build": "new_build", "sửa chữa": "repair"},
}


@dataclass(frozen=True)
class ParsedRow:
    line: int
    household: Household


def _normalise(field: str, value: str) -> str:
    value = value.strip()
    return _ALIASES.get(field, {}).get(value.lower(), value)


def parse(data: bytes) -> tuple[list[ParsedRow], list[Problem]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return [], [Problem(1, "file", f"not UTF-8 text ({err.reason} at byte {err.start}); save the CSV as UTF-8")]
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        return [], [Problem(1, c, "column is missing from the header") for c in missing]
    reader.fieldnames = header

    rows: list[ParsedRow] = []
    problems: list[Problem] = []
    seen_code: dict[str, int] = {}
    seen_cccd: dict[str, int] = {}
    for index, raw in enumerate(reader):
        line = index + 2
        if None in raw:
            cells = len(header) + len(raw[None])
            problems.append(Problem(line, "row", f"has {cells} cells, the header has {len(header)}"))
            continue
        values = {c: _normalise(c, raw.get(c) or "") for c in ALL_COLUMNS if c in header}
        if not any(values.values()):
            continue  # a blank line, as Excel leaves at the end
        try:
            household = Household(**values)
        except ValidationError as err:
            for e in err.errors():
                field = str(e["loc"][0]) if e["loc"] else "row"
                problems.append(Problem(line, field, f"{e['msg']} (got {values.get(field, '')!r})"))
            continue
        for field, seen in (("code", seen_code), ("cccd", seen_cccd)):
            value = getattr(household, field)
            if value in seen:
                problems.append(Problem(line, field, f"{value} duplicates line {seen[value]}"))
            else:
                seen[value] = line
        rows.append(ParsedRow(line, household))
    if not rows and not problems:
        problems.append(Problem(2, "file", "the list has no households"))
    return rows, problems


def to_csv(items: list[Household] | list[dict]) -> bytes:
    """A list as the import reads it: the header, then one row per household (models or plain rows)."""
    lines = [",".join(ALL_COLUMNS)]
    for h in items:
        d = h.model_dump(mode="json") if isinstance(h, Household) else h
        lines.append(",".join(str(d.get(c) or "") for c in ALL_COLUMNS))
    return ("\n".join(lines) + "\n").encode()
