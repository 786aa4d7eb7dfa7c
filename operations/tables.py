"""Reading a table as agencies send it: an Excel workbook (.xlsx) or delimited text (CSV/TXT), into a header and
rows of text cells, or a list of problems naming line and column.

An officer's list comes out of whatever the commune's computer has: Excel saving "CSV" with `;` where the
region's list separator says so, Windows-1258 from older Vietnamese Windows, tab-separated "Unicode text",
NFD diacritics typed on a Mac, numbers Excel turned into floats. Every cell comes out as NFC text, stripped, so
that "Xã Tú Mịch" typed either way is one commune. Invisible characters that change how text reads (bidi
overrides, zero-width joiners, control characters) are refused, never silently dropped: the officer retypes the
cell and the register holds what people see. The reading is bounded (size, rows) before the work is done.

Lines are as a person sees them: in a workbook the row number, in text the physical line (the header is line
1, blank lines counted, a quoted cell over several lines counted whole).
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, time

from core.formatting import day

MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 200_000
# An .xlsx is a zip: its sheets may unpack to far more than the file's size; past this it is refused unread.
MAX_UNPACKED = 400 * 1024 * 1024

# Invisible characters that change how text reads or compares: bidi marks, embeddings, overrides and isolates,
# zero-width spaces and joiners, the byte-order mark inside text.
_INVISIBLE = {
    0x061C: "ARABIC LETTER MARK",
    0x200B: "ZERO WIDTH SPACE",
    0x200C: "ZERO WIDTH NON-JOINER",
    0x200D: "ZERO WIDTH JOINER",
    0x200E: "LEFT-TO-RIGHT MARK",
    0x200F: "RIGHT-TO-LEFT MARK",
    0x202A: "LEFT-TO-RIGHT EMBEDDING",
    0x202B: "RIGHT-TO-LEFT EMBEDDING",
    0x202C: "POP DIRECTIONAL FORMATTING",
    0x202D: "LEFT-TO-RIGHT OVERRIDE",
    0x202E: "RIGHT-TO-LEFT OVERRIDE",
    0x2066: "LEFT-TO-RIGHT ISOLATE",
    0x2067: "RIGHT-TO-LEFT ISOLATE",
    0x2068: "FIRST STRONG ISOLATE",
    0x2069: "POP DIRECTIONAL ISOLATE",
    0xFEFF: "ZERO WIDTH NO-BREAK SPACE (byte-order mark)",
}
# Inside a cell a tab and a line break (a quoted cell over several lines; CR LF from a workbook) are text; the
# other controls (Unicode category Cc: U+0000-U+001F, U+007F-U+009F) are not, nor the invisible characters.
_ALLOWED_CONTROLS = "\t\n\r"
_REFUSED = re.compile(
    "["
    + "".join(re.escape(chr(c)) for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) not in _ALLOWED_CONTROLS)
    + "".join(re.escape(chr(c)) for c in _INVISIBLE)
    + "]"
)
_DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class Problem:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, field {self.field}: {self.message}"


@dataclass(frozen=True)
class Table:
    """A table's header (as found, NFC, stripped) and its non-blank rows as (line, cells by header name);
    `header_line` is where the header was found (1 unless blank lines come first)."""

    header: list[str]
    rows: list[tuple[int, dict[str, str]]]
    header_line: int = 1


class TableRefused(Exception):
    """The file is not a table the engine reads, or a cell holds what it must not: every problem found.

    When the file is a table and only some rows are refused, `table` holds the others, so that a reader can
    report their problems too, at once (the officer mends the file once); it is None otherwise."""

    def __init__(self, problems: list[Problem], table: Table | None = None) -> None:
        super().__init__("; ".join(str(p) for p in problems[:5]) + (" …" if len(problems) > 5 else ""))
        self.problems = problems
        self.table = table


def _refuse(message: str, field: str = "file", line: int = 1) -> TableRefused:
    return TableRefused([Problem(line, field, message)])


def read_table(data: bytes, file_name: str) -> Table:
    """The table in `data`: an .xlsx workbook's first worksheet, or delimited text. What the file is, is read
    from its bytes (a workbook is a zip, text has no NUL), the name only words the messages."""
    if len(data) > MAX_BYTES:
        raise _refuse(f"{file_name} is {len(data):,} bytes; at most {MAX_BYTES // (1024 * 1024)} MB: split the list")
    if not data.strip():
        raise _refuse(f"{file_name} is empty")
    kind = _kind(data, file_name)
    if kind == "xlsx":
        found = _xlsx_rows(data, file_name)
    else:
        found = _text_rows(_decode(data, file_name))
    return _table(found)


def _kind(data: bytes, file_name: str) -> str:
    """'xlsx' or 'text'; anything else refused, saying what it looks like and how to save it instead."""
    save = "open it in Excel and save it as Excel Workbook (.xlsx) or CSV UTF-8"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = set(z.namelist())
        except zipfile.BadZipFile:
            raise _refuse(f"{file_name} is a damaged zip archive, not a workbook the engine can read: {save}") from None
        if "xl/workbook.xml" in names:
            return "xlsx"
        if "content.xml" in names:
            raise _refuse(f"{file_name} is an OpenDocument spreadsheet (.ods): {save}")
        if any(n.startswith("word/") for n in names):
            raise _refuse(f"{file_name} is a Word document, not a table: {save}")
        raise _refuse(f"{file_name} is a zip archive, not an Excel workbook: {save}")
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise _refuse(f"{file_name} is an old-format Excel 97-2003 file (.xls), which the engine does not read: {save}")
    if data.startswith(b"%PDF"):
        raise _refuse(f"{file_name} is a PDF document, not a table: ask for the list as .xlsx or CSV")
    for magic, what in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x1f\x8b", "gzip")):
        if data.startswith(magic):
            raise _refuse(f"{file_name} is {what}, not a table: ask for the list as .xlsx or CSV")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "text"  # UTF-16 ("Unicode text" from Excel): NULs are expected
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<table", b"<?xml")):
        raise _refuse(f"{file_name} is a web page or XML (some systems save these with an .xls name): {save}")
    if b"\x00" in data:
        raise _refuse(f"{file_name} is not text (it holds NUL bytes) nor an Excel workbook: {save}")
    return "text"


def _decode(data: bytes, file_name: str) -> str:
    """UTF-8 (with or without BOM), else UTF-16 with its BOM, else Windows-1258; strict, never guessing past."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as err:
            raise _refuse(f"{file_name} starts as UTF-16 but is not ({err.reason} at byte {err.start})") from None
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return body.decode("cp1258")
    except UnicodeDecodeError as err:
        raise _refuse(
            f"{file_name} is neither UTF-8 nor Windows-1258 text (byte 0x{body[err.start]:02x} at {err.start}): "
            "save it as CSV UTF-8 or as an Excel workbook"
        ) from None


def _delimiter(text: str) -> str:
    """The separator of the header line (`,` `;` or tab), counted outside quotes; one column is `,`."""
    for line in text.splitlines():
        if not line.strip():
            continue
        counts = dict.fromkeys(_DELIMITERS, 0)
        quoted = False
        for ch in line:
            if ch == '"':
                quoted = not quoted
            elif not quoted and ch in counts:
                counts[ch] += 1
        best = max(_DELIMITERS, key=lambda d: counts[d])
        return best if counts[best] else ","
    return ","


def _text_rows(text: str):
    """(line, raw cells) of every record; universal newlines, so a lone CR ends a line as LF does."""
    reader = csv.reader(io.StringIO(text, newline=None), delimiter=_delimiter(text), strict=False)
    previous = 0
    try:
        for cells in reader:
            yield previous + 1, cells
            previous = reader.line_num
    except csv.Error as err:
        raise _refuse(f"not readable as a delimited table: {err}", line=previous + 1) from None


def _xlsx_rows(data: bytes, file_name: str):
    """(row number, cell values as text) of the first worksheet, read streaming."""
    import openpyxl  # imported here: it is heavy, and only workbooks need it

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            unpacked = sum(i.file_size for i in z.infolist())
    except zipfile.BadZipFile:
        raise _refuse(f"{file_name} is a damaged workbook") from None
    if unpacked > MAX_UNPACKED:
        raise _refuse(f"{file_name} unpacks to {unpacked:,} bytes; at most {MAX_UNPACKED // (1024 * 1024)} MB")
    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises what its parsers raise: KeyError, ValueError, XML errors
        raise _refuse(f"{file_name} is not a workbook the engine can read ({type(err).__name__}: {err})") from None
    try:
        if not wb.worksheets:
            raise _refuse(f"{file_name} has no worksheet")
        ws = wb.worksheets[0]
        declared = ws.max_row
        if declared is not None and declared > MAX_ROWS + 1:
            raise _refuse(f"{file_name} has {declared:,} rows; at most {MAX_ROWS:,}: split the list")
        # Some writers declare a wrong size (A1 only): read what is there, not what is said.
        ws.reset_dimensions()
        for number, values in enumerate(ws.iter_rows(values_only=True), start=1):
            yield number, [_xlsx_text(v) for v in values]
    finally:
        wb.close()


def _xlsx_text(value) -> str:
    """A cell's value as the officer sees it: whole numbers without '.0' (a CCCD stored as a number), dates
    dd/mm/yyyy, booleans as Excel writes them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime):
        if value.time() == time(0):
            return day(value.date())
        return f"{day(value.date())} {value.strftime('%H:%M:%S')}"
    if isinstance(value, date):
        return day(value)
    return str(value)


def _clean(raw: str, line: int, field: str, problems: list[Problem]) -> str:
    """The cell NFC and stripped; an invisible or control character is a problem, named with its position."""
    found = _REFUSED.search(raw)
    if found is None:
        return unicodedata.normalize("NFC", raw).strip()
    ch = found.group()
    code = ord(ch)
    what = _INVISIBLE.get(code) or f"control character {unicodedata.name(ch, '')}".strip()
    at = found.start() + 1
    problems.append(Problem(line, field, f"holds U+{code:04X} {what} at character {at}, invisible: retype the cell"))
    return ""


def _table(found) -> Table:
    problems: list[Problem] = []
    header: list[str] | None = None
    header_line = 1
    rows: list[tuple[int, dict[str, str]]] = []
    for line, cells in found:
        if not any(c.strip() for c in cells):
            continue  # a blank row, as Excel leaves between and after
        if header is None:
            header_line = line
            header = [_clean(c, line, f"column {i}", problems) for i, c in enumerate(cells, start=1)]
            while header and not header[-1]:
                header.pop()
            seen: dict[str, int] = {}
            for i, name in enumerate(header, start=1):
                if not name:
                    problems.append(Problem(line, f"column {i}", "the header cell is empty: name the column"))
                elif name in seen:
                    problems.append(Problem(line, name, f"column {i} has the same name as column {seen[name]}"))
                else:
                    seen[name] = i
            continue
        if len(rows) >= MAX_ROWS:
            raise TableRefused([*problems, Problem(line, "file", f"more than {MAX_ROWS:,} rows: split the list")])
        extra = [c for c in cells[len(header) :] if c.strip()]
        if extra:
            problems.append(Problem(line, "row", f"has {len(cells)} cells, the header has {len(header)}"))
            continue
        values = {
            name: _clean(cells[i] if i < len(cells) else "", line, name or f"column {i + 1}", problems)
            for i, name in enumerate(header)
        }
        if any(values.values()):
            rows.append((line, values))
    if header is None:
        problems.append(Problem(header_line, "file", "the file has no header and no rows"))
    if problems:
        refused_lines = {p.line for p in problems}
        rest = None
        if header is not None and header_line not in refused_lines:
            rest = Table(header, [r for r in rows if r[0] not in refused_lines], header_line)
        raise TableRefused(problems, rest)
    return Table(header=header or [], rows=rows, header_line=header_line)
