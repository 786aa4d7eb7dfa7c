"""Cells the engine writes for spreadsheets: text stays text, so an export never runs a formula.

A name, a reason or a document reference comes from people; one that begins with `=`, `+`, `-` or `@` (or a
tab or carriage return, which some spreadsheets skip before looking) would be read by Excel or LibreOffice as
a formula and run when the export is opened: `=HYPERLINK(...)` sending data away (OWASP, CSV injection). In
CSV such a value is written with a leading apostrophe (the spreadsheet shows the text, without running it);
in a workbook the cell is typed as a string. Numbers stay numbers (money is summed by whoever opens it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def formula_like(value: Any) -> bool:
    """Whether a spreadsheet would take this value for a formula: text beginning with a trigger character."""
    return isinstance(value, str) and value.startswith(FORMULA_START)


def safe_cell(value: Any) -> Any:
    """The value as a CSV cell: formula-like text behind an apostrophe, everything else as it is."""
    return "'" + value if formula_like(value) else value


def safe_row(values: Iterable[Any]) -> list[Any]:
    """A CSV row of safe cells."""
    return [safe_cell(v) for v in values]


def append_row(ws, values: Iterable[Any]) -> None:
    """Append a row to an openpyxl worksheet, formula-like text typed as a string (shown, never run)."""
    ws.append(list(values))
    for cell in ws[ws.max_row]:
        if formula_like(cell.value):
            cell.data_type = "s"
