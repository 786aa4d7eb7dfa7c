"""The settlement dossier (hồ sơ quyết toán) for a funding source and a commune, or the whole province: what a
Finance department hands the State Audit (Circular 55/2023/TT-BTC art. 75).

Its sheets: the summary (scope, totals, the reconciliation's figures they must equal, the three-way
verification's result and the signed witness checkpoint it rests on); the approved and amended list; each
house's completion and put-into-use minutes (the evidence references of its `complete_construction` and
`accept` steps, attachments with their SHA-256); each payment with the bank's reference; what was released
back or returned; the unspent balance per source; the district-held money handed over in the 2025 reform.

Money is read from the ledger per household and summed here, independently of operations/reconciliation.py's
per-source sums; `Dossier.matches` is whether the two agree to the đồng.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from archive.witness import read_published
from auditor.live import verify_live
from core.cells import append_row, safe_row
from core.errors import Refusal
from core.formatting import day, moment
from core.settings import Settings
from db import dossier as dossier_db
from db import gazetteer as gazetteer_db
from db import policy as policy_db
from db import reconciliation as recon_db
from db import users
from db.engine import Sessions
from operations.reconciliation import Reconciliation, commune_key, reconcile


@dataclass
class Dossier:
    scope: str
    source: str | None
    commune: str | None
    sheets: list[tuple[str, list[str], list[list]]] = field(default_factory=list)
    paid: int = 0
    pending: int = 0
    released: int = 0
    expected: dict[str, int] = field(default_factory=dict)  # what the reconciliation says for the same scope
    verified: str = "not run"
    checkpoint: str = "none"

    @property
    def compared(self) -> bool:
        """Whether the reconciliation has a line for this scope (a source over a commune has none)."""
        return bool(self.expected)

    @property
    def matches(self) -> bool:
        return self.compared and all(getattr(self, k) == v for k, v in self.expected.items())


async def _reader(session, user_id: str) -> None:
    """Refuse a user whose role does not read the province's money records whole (Finance, the auditors)."""
    actor = await users.require_actor(session, user_id)
    current = await policy_db.policy_today(session)
    if not current.reads_money(actor.role):
        raise Refusal("RoleNotAllowed", f"role {actor.role!r} may not write a settlement dossier")


async def build_verified(
    client: Client,
    sessions: Sessions,
    settings: Settings,
    user_id: str,
    *,
    source: str | None = None,
    commune: str | None = None,
) -> Dossier:
    """`build`, after the three-way verification it prints and with the witness's latest signed checkpoint
    (what the command line and the page download); the user's role is checked before the verification runs."""
    async with sessions() as session:
        await _reader(session, user_id)
    report, _ = await verify_live(client, sessions, settings, client.data_converter)
    cp = read_published(settings.witness_path)
    return await build(
        sessions,
        user_id,
        source=source,
        commune=commune,
        verified=f"{len(report.discrepancies)} discrepancies over {report.transitions} steps",
        checkpoint=f"{cp.seq} ({cp.hash[:16]}…, key {cp.key_id})" if cp else "none published",
    )


async def build(
    sessions: Sessions,
    user_id: str,
    *,
    source: str | None = None,
    commune: str | None = None,
    verified: str = "not run",
    checkpoint: str = "none",
) -> Dossier:
    """The dossier of `source` (all sources: None) for `commune` (the province: None), for Finance or an
    auditor. `verified` and `checkpoint`: the three-way verification's result and the witness checkpoint, as
    the caller ran and read them."""
    async with sessions() as session:
        # One snapshot: the reconciliation and the dossier's own sums read the same ledger.
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        await _reader(session, user_id)
        accounts = await dossier_db.source_accounts(session)
        if source is not None and source not in accounts.values():
            raise Refusal("UnknownFundingSource", f"funding source {source!r} does not exist")
        register = await dossier_db.register(session)
        if commune:  # as the reconciliation reports communes: the new map's, or the old commune with its district
            maps = await gazetteer_db.old_and_new(session)
            register = {c: r for c, r in register.items() if commune_key(c, r.district, maps) == commune}
        if not register:
            raise Refusal("NothingToSettle", f"no household registered in {commune or 'the province'}")
        recon = await reconcile(session)
        transfers = await recon_db.transfers(session)
        minutes: dict[str, dict[str, tuple]] = defaultdict(dict)
        for code, step, evidence, at in await dossier_db.minutes(session, list(register)):
            minutes[code][step] = (evidence, at)
        changes = await dossier_db.changes(session, list(register))
        paid_rows = await dossier_db.payments_of(session, list(register))
        handed = await dossier_db.handovers_all(session)

    d = Dossier(
        "province" if commune is None else f"commune {commune}",
        source,
        commune,
        verified=verified,
        checkpoint=checkpoint,
    )
    wanted = {a for a, c in accounts.items() if source is None or c == source}
    resolved = {x.pending_id for x in transfers if x.pending_id is not None}
    voided = {x.pending_id for x in transfers if x.kind == "void_pending"}
    money: dict[str, dict[str, int]] = defaultdict(lambda: {"paid": 0, "pending": 0, "released": 0})
    by_id = {x.id: x for x in transfers}
    for x in transfers:
        if x.household_code not in register or x.debit_account_id not in wanted:
            continue
        if x.kind == "post_pending":
            money[x.household_code]["paid"] += x.amount
        elif x.kind == "pending" and x.id not in resolved:
            money[x.household_code]["pending"] += x.amount
        elif x.kind == "pending" and x.id in voided:
            money[x.household_code]["released"] += x.amount
    d.paid = sum(m["paid"] for m in money.values())
    d.pending = sum(m["pending"] for m in money.values())
    d.released = sum(m["released"] for m in money.values())
    d.expected = _expected(recon, source, commune)

    d.sheets.append(("Tổng hợp", ["Nội dung", "Giá trị"], _summary(d, recon)))
    d.sheets.append(
        (
            "Danh sách",
            [
                "Mã hộ",
                "Chủ hộ",
                "Huyện",
                "Xã",
                "Đối tượng",
                "Loại hỗ trợ",
                "Quyết định",
                "Bước",
                "Định mức (đ)",
                "Đã chi (đ)",
            ],
            [
                [
                    c,
                    r.head_of_household,
                    r.district or "",
                    r.commune,
                    r.beneficiary_group,
                    r.support_type,
                    r.decision_ref,
                    r.stage,
                    r.entitlement,
                    money[c]["paid"],
                ]
                for c, r in register.items()
            ],
        )
    )
    d.sheets.append(
        (
            "Điều chỉnh",
            ["Mã hộ", "Nội dung", "Cũ", "Mới", "Đề nghị", "Duyệt", "Lúc"],
            [
                [
                    x.household_code,
                    x.kind,
                    x.old_value or "",
                    x.new_value or "",
                    x.requested_by,
                    x.approved_by,
                    moment(x.at),
                ]
                for x in changes
            ],
        )
    )
    d.sheets.append(
        (
            "Nghiệm thu",
            ["Mã hộ", "Biên bản hoàn thành", "Ngày", "Biên bản nghiệm thu đưa vào sử dụng", "Ngày"],
            [
                [c, *_minute(minutes[c].get("complete_construction")), *_minute(minutes[c].get("accept"))]
                for c in register
                if minutes[c]
            ],
        )
    )
    d.sheets.append(
        (
            "Chi trả",
            [
                "Mã thanh toán",
                "Mã hộ",
                "Đợt",
                "Lần",
                "Số tiền (đ)",
                "Người nhận",
                "Trạng thái",
                "Mã ngân hàng",
                "Lý do",
                "Ngày",
            ],
            [
                [
                    p.payment_id,
                    p.household_code,
                    p.tranche,
                    p.attempt,
                    p.amount,
                    p.payee,
                    p.status,
                    p.bank_ref or "",
                    p.reason or "",
                    moment(p.resolved_at) if p.resolved_at else "",
                ]
                for p in paid_rows
            ],
        )
    )
    d.sheets.append(
        (
            "Hoàn trả, hủy",
            ["Mã hộ", "Đợt", "Nguồn", "Số tiền trả về nguồn (đ)"],
            [
                [x.household_code, x.tranche or "", accounts.get(x.debit_account_id, ""), x.amount]
                for pid in sorted(voided)
                if (x := by_id.get(pid)) is not None and x.household_code in register and x.debit_account_id in wanted
            ],
        )
    )
    d.sheets.append(
        (
            "Số dư",
            ["Nguồn", "Đã nhận (đ)", "Đã giữ chỗ (đ)", "Đã chuyển (đ)", "Đã chi (đ)", "Còn lại chưa dùng (đ)"],
            [
                [s.code, s.received + s.handed_in, s.reserved, s.released, s.paid, s.free]
                for s in recon.sources
                if source is None or s.code == source
            ],
        )
    )
    d.sheets.append(
        (
            "Bàn giao",
            ["Căn cứ", "Nguồn", "Từ", "Sang", "Nguồn nhận", "Đã chi (đ)", "Bàn giao (đ)"],
            [
                [x.basis, x.source, x.from_unit, x.to_unit, x.to_source or "", x.paid, x.handed_over]
                for x in handed
                if source is None or source in (x.source, x.to_source)
            ],
        )
    )
    return d


def _minute(found) -> list:
    if not found:
        return ["", ""]
    evidence, at = found
    return ["; ".join(evidence or []), day(at)]


def _expected(recon: Reconciliation, source: str | None, commune: str | None) -> dict[str, int]:
    """The reconciliation's figures for the dossier's scope, where it has a line for it: a source over the
    province, every source over the province, or every source over a commune of the new map."""
    if commune is None:
        lines = [s for s in recon.sources if source is None or s.code == source]
        return {"paid": sum(s.paid for s in lines), "pending": sum(s.reserved + s.released for s in lines)}
    if source is None:
        for g in recon.communes:
            if g.key == commune:
                return {"paid": g.paid, "pending": g.reserved + g.released}
    return {}


def _summary(d: Dossier, recon: Reconciliation) -> list[list]:
    rows = [
        ["Phạm vi", d.scope],
        ["Nguồn vốn", d.source or "tất cả"],
        ["Đã chi (đ)", d.paid],
        ["Đang giữ chỗ, chưa chi (đ)", d.pending],
        ["Đã trả về nguồn (đ)", d.released],
    ]
    for k, v in d.expected.items():
        rows.append([f"Đối chiếu: {k} theo sổ cái (đ)", v])
    if not d.compared:
        rows.append(["Khớp đối chiếu", "không có dòng đối chiếu cho phạm vi này (nguồn × xã): chưa so sánh"])
    else:
        rows.append(["Khớp đối chiếu", "khớp đến từng đồng" if d.matches else "KHÔNG KHỚP"])
    rows.append(["Đối chiếu toàn bộ", "cân" if recon.balanced else f"{len(recon.problems)} chênh lệch"])
    rows.append(["Kiểm tra ba chiều (lịch sử × nhật ký × sổ cái)", d.verified])
    rows.append(["Điểm kiểm tra đã ký (witness)", d.checkpoint])
    return rows


def write_xlsx(d: Dossier, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_xlsx(d))
    return path


def to_xlsx(d: Dossier) -> bytes:
    """The workbook: one sheet per part, bold headers, money as numbers with thousands separators."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.remove(wb.active)
    for name, header, rows in d.sheets:
        ws = wb.create_sheet(name)
        append_row(ws, header)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in rows:
            append_row(ws, row)
            for cell in ws[ws.max_row]:
                if isinstance(cell.value, int) and not isinstance(cell.value, bool):
                    cell.number_format = "#,##0"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def write_csv(d: Dossier, folder: Path) -> list[Path]:
    """One CSV per sheet, UTF-8 with a byte-order mark so Excel shows the Vietnamese letters."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, header, rows) in enumerate(d.sheets, start=1):
        path = folder / f"{i:02d}-{name}.csv"
        with path.open("w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow(safe_row(header))
            for row in rows:
                w.writerow(safe_row(row))
        written.append(path)
    return written
