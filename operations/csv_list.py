"""Reading an approved list (an Excel workbook or a CSV, as agencies send it) into households, or into a list
of problems.

The file is read by `operations.tables.read_table` (xlsx or delimited text, any of the encodings Vietnamese
Windows writes, every cell NFC). Headers may be the engine's names or the Vietnamese ones officers type ("Mã
hộ", "Số CCCD", "Xã"), matched without regard to case, diacritics or spacing; columns the engine does not
know (STT, Ghi chú) are left alone. Every row is checked; a problem names its line (the header is line 1)
and the field as the file names it. Codes and CCCD numbers must be unique within the file. Group and support
type accept the English values or the Vietnamese terms.
"""

from __future__ import annotations

import csv
import functools
import io
import unicodedata
from dataclasses import dataclass

from pydantic import ValidationError

from core.cells import safe_row
from models.household import Household
from operations.tables import Problem as Problem  # its home is the table reader; importers name it here too
from operations.tables import TableRefused, read_table

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

# The Vietnamese header of each column: the template's, and the first name the reader knows it by.
VIETNAMESE = {
    "code": "Mã hộ",
    "head_of_household": "Họ tên chủ hộ",
    "cccd": "Số CCCD",
    "province": "Tỉnh",
    "district": "Huyện",
    "commune": "Xã",
    "beneficiary_group": "Đối tượng",
    "support_type": "Loại hỗ trợ",
    "decision_ref": "Số quyết định",
    "programme": "Chương trình",
}
# Other headers agencies use for the same columns (compared folded: see `_fold`). An English header is the
# engine's name only: a near miss ('decision') is reported missing, not guessed.
_HEADER_NAMES = {
    "code": ("Mã hộ gia đình", "Mã"),
    "head_of_household": ("Họ và tên chủ hộ", "Chủ hộ", "Họ tên", "Họ và tên"),
    "cccd": ("CCCD", "Số CCCD/ĐDCN", "Số định danh cá nhân", "Căn cước công dân", "Số căn cước"),
    "province": ("Tỉnh/Thành phố", "Tỉnh, thành phố"),
    "district": ("Quận/Huyện", "Huyện/Thị xã", "Quận, huyện"),
    "commune": ("Phường", "Xã/Phường", "Xã, phường", "Xã/Phường/Thị trấn", "Xã/Phường/Đặc khu"),
    "beneficiary_group": ("Nhóm đối tượng",),
    "support_type": ("Hình thức hỗ trợ", "Loại"),
    "decision_ref": ("Quyết định", "Số QĐ", "Quyết định phê duyệt"),
    "programme": ("Chương trình MTQG", "programme code"),
}

_ALIASES = {
    "beneficiary_group": {
        "người có công": "meritorious",
        "hộ người có công": "meritorious",
        "ncc": "meritorious",
        "hộ nghèo": "poor",
        "nghèo": "poor",
        "hộ cận nghèo": "near_poor",
        "cận nghèo": "near_poor",
        "near-poor": "near_poor",
        "near poor": "near_poor",
        "thiên tai": "disaster",
        "hộ bị thiên tai": "disaster",
        "khác": "other",
    },
    "support_type": {
        "xây mới": "new_build",
        "xây dựng mới": "new_build",
        "new build": "new_build",
        "new-build": "new_build",
        "sửa chữa": "repair",
        "sửa chữa nhà": "repair",
    },
}

LEADING_ZERO = "has 11 digits: leading zero lost? (Excel drops it; format the column as text)"


@functools.lru_cache(maxsize=4096)  # a list repeats its groups and support types on every row
def _fold(text: str) -> str:
    """A name as compared: no diacritics (đ is d), lower case, letters and digits only ('Số CCCD' is 'socccd')."""
    text = unicodedata.normalize("NFD", text.replace("Đ", "D").replace("đ", "d"))
    return "".join(ch for ch in text.casefold() if ch.isalnum())


_FIELD_OF = {
    _fold(name): field
    for field in ALL_COLUMNS
    for name in (field, field.replace("_", " "), VIETNAMESE[field], *_HEADER_NAMES[field])
}
_VALUE_OF = {field: {_fold(k): v for k, v in aliases.items()} for field, aliases in _ALIASES.items()}


@dataclass(frozen=True)
class ParsedRow:
    line: int
    household: Household


def _normalise(field: str, value: str) -> str:
    value = value.strip()
    if field == "cccd":
        return value.replace(" ", "").replace(".", "")  # '001 234 567 890' as some lists group it
    aliases = _ALIASES.get(field)
    if not aliases:
        return value
    return aliases.get(value.lower()) or _VALUE_OF[field].get(_fold(value), value)


def _columns(header: list[str], line: int) -> tuple[dict[str, str], list[Problem]]:
    """Which header names which field: {field: header as found}; a field two columns claim is a problem."""
    found: dict[str, str] = {}
    problems = []
    for name in header:
        field = _FIELD_OF.get(_fold(name))
        if field is None:
            continue
        if field in found:
            problems.append(Problem(line, name, f"names the same column as {found[field]!r} ({field}): keep one"))
        else:
            found[field] = name
    missing = [c for c in COLUMNS if c not in found]
    vietnamese = any(not name.isascii() for name in header)
    for c in missing:
        hint = f" (in Vietnamese: {VIETNAMESE[c]!r})" if vietnamese else ""
        problems.append(Problem(line, c, f"column is missing from the header{hint}"))
    return found, problems


def parse(data: bytes, file_name: str = "list.csv") -> tuple[list[ParsedRow], list[Problem]]:
    """The households of the list in `data` (`file_name` only words the messages: what the file is, is read
    from its bytes), or every problem found; any problem and the caller refuses the whole list."""
    try:
        table, refused = read_table(data, file_name), []
    except TableRefused as err:
        if err.table is None:
            return [], err.problems
        table, refused = err.table, err.problems  # rows with a refused cell: the others are checked too
    columns, problems = _columns(table.header, table.header_line)
    if problems:
        return [], refused + problems
    shown = columns  # a problem names the field as the file's header does

    rows: list[ParsedRow] = []
    seen_code: dict[str, int] = {}
    seen_cccd: dict[str, int] = {}
    for line, cells in table.rows:
        values = {field: _normalise(field, cells.get(name, "")) for field, name in columns.items()}
        if not any(values.values()):
            continue  # a row whose only cells are columns the engine does not read
        cccd = values.get("cccd", "")
        zero_lost = len(cccd) == 11 and cccd.isdigit()  # a number column: Excel dropped the leading 0
        if zero_lost:
            problems.append(Problem(line, shown["cccd"], f"{LEADING_ZERO} (got {cccd!r})"))
        try:
            household = Household(**values)
        except ValidationError as err:
            for e in err.errors():
                field = str(e["loc"][0]) if e["loc"] else "row"
                if not (zero_lost and field == "cccd"):
                    got = values.get(field, "")
                    problems.append(Problem(line, shown.get(field, field), f"{e['msg']} (got {got!r})"))
            continue
        if zero_lost:
            continue
        for field, seen in (("code", seen_code), ("cccd", seen_cccd)):
            value = getattr(household, field)
            if value in seen:
                problems.append(Problem(line, shown[field], f"{value} duplicates line {seen[value]}"))
            else:
                seen[value] = line
        rows.append(ParsedRow(line, household))
    if not rows and not problems and not refused:
        problems.append(Problem(table.header_line + 1, "file", "the list has no households"))
    return rows, sorted(refused + problems, key=lambda p: p.line)


def to_csv(items: list[Household] | list[dict]) -> bytes:
    """A list as the import reads it: the header, then one row per household (models or plain rows)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ALL_COLUMNS)
    for h in items:
        d = h.model_dump(mode="json") if isinstance(h, Household) else h
        writer.writerow(safe_row(str(d.get(c) or "") for c in ALL_COLUMNS))
    return buf.getvalue().encode()


# How a list written by an agency names each value: the first Vietnamese name the reader knows it by.
_LABEL = {field: {code: name.capitalize() for name, code in reversed(list(a.items()))} for field, a in _ALIASES.items()}


def to_xlsx(items: list[Household]) -> bytes:
    """A list as an agency sends it in a workbook: the template's Vietnamese headers and value names, every
    cell text (the CCCD keeps its leading zero); it imports as `to_csv`'s list does."""
    from openpyxl import Workbook

    from core.cells import append_row

    wb = Workbook()
    ws = wb.active
    ws.title = "Danh sách"
    ws.append([VIETNAMESE[c] for c in ALL_COLUMNS])
    for h in items:
        d = h.model_dump(mode="json")
        append_row(ws, (_LABEL.get(c, {}).get(d.get(c), d.get(c)) or "" for c in ALL_COLUMNS))
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            cell.number_format = "@"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


TEMPLATE_EXAMPLE = {
    "code": "LS-LB-TM-0001",
    "head_of_household": "Hoàng Văn An",
    "cccd": "020190000001",
    "province": "Lạng Sơn",
    "district": "Lộc Bình",
    "commune": "Tú Mịch",
    "beneficiary_group": "Hộ nghèo",
    "support_type": "Xây mới",
    "decision_ref": "270/QĐ-UBND",
    "programme": "",
}
_TEMPLATE_NOTES = {
    "code": "Mã hộ trong danh sách được duyệt: chữ in hoa, số, dấu chấm, gạch ngang (3–40 ký tự)",
    "head_of_household": "Họ và tên chủ hộ",
    "cccd": "12 chữ số; cột đã định dạng Văn bản (Text) để Excel không bỏ số 0 ở đầu",
    "province": "Tên tỉnh",
    "district": "Tên huyện (để trống nếu đơn vị đã bỏ cấp huyện)",
    "commune": "Tên xã, phường",
    "beneficiary_group": "Người có công · Hộ nghèo · Hộ cận nghèo · Thiên tai · Khác",
    "support_type": "Xây mới · Sửa chữa",
    "decision_ref": "Số quyết định phê duyệt danh sách, ví dụ 270/QĐ-UBND",
    "programme": "Mã chương trình MTQG đã bố trí vốn cho hộ (nếu có), ví dụ MTQG-GNBV",
}


def template_xlsx() -> bytes:
    """The list to fill in: Vietnamese headers, one example row, the CCCD column typed as text ('@') so
    Excel keeps its leading zero; a second sheet says what each column takes. It imports as it is."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    ws = wb.active
    ws.title = "Danh sách"
    ws.append([VIETNAMESE[c] for c in ALL_COLUMNS])
    ws.append([TEMPLATE_EXAMPLE[c] for c in ALL_COLUMNS])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for i, c in enumerate(ALL_COLUMNS, start=1):
        letter = get_column_letter(i)
        ws.column_dimensions[letter].width = max(len(VIETNAMESE[c]), len(TEMPLATE_EXAMPLE[c])) + 4
        if c in ("cccd", "code", "decision_ref"):
            ws.column_dimensions[letter].number_format = "@"
            for row in range(2, 1001):  # the rows an officer fills: a column's style alone Excel does not apply
                ws.cell(row=row, column=i).number_format = "@"
    ws.freeze_panes = "A2"
    notes = wb.create_sheet("Hướng dẫn")
    notes.append(["Cột", "Nội dung"])
    for cell in notes[1]:
        cell.font = Font(bold=True)
    for c in ALL_COLUMNS:
        notes.append([VIETNAMESE[c], _TEMPLATE_NOTES[c]])
    notes.append([])
    notes.append(["", "Chỉ đọc trang đầu tiên. Mọi dòng đều được kiểm tra; có lỗi thì không dòng nào được nhập."])
    notes.column_dimensions["A"].width = 18
    notes.column_dimensions["B"].width = 90
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
