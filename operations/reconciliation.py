"""The reconciliation report: per source, per district and per decision — received, reserved, released,
paid, free — every figure a sum of ledger transfers, and a check that recomputes it three other ways.

- reserved: pending transfers not yet resolved whose tranche is not with the payment channel;
- released: pending transfers of tranches released to the payment channel, awaiting its confirmation;
- paid: posted pending transfers (the channel confirmed);
- free: received − reserved − released − paid − reimbursed out (cấp bù paid to a district's advance).

The check compares each source's figures with the balances PostgreSQL keeps on its account, each
household's ledger money with the read model, and the three views' totals with each other; it also
runs the ledger's own invariant check. Any difference is listed; an empty list means balanced to the đồng.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from core.cells import append_row, safe_row
from core.formatting import amount
from db import finance as finance_db
from db import gazetteer as gazetteer_db
from db import ledger
from db import reconciliation as recon_db
from db.engine import Session as AsyncSession
from models.gazetteer import NO_DISTRICT


@dataclass
class SourceLine:
    code: str
    name: str
    category: str
    state_budget: bool
    received: int = 0
    reserved: int = 0
    released: int = 0
    paid: int = 0
    reimbursed_out: int = 0
    handed_in: int = 0  # a district-held source's free money handed to this one (2025 reform)
    handed_out: int = 0  # this source's free money handed to its holder's successor

    @property
    def free(self) -> int:
        return (
            self.received + self.handed_in - self.reserved - self.released - self.paid - self.reimbursed_out
        ) - self.handed_out


@dataclass
class GroupLine:
    key: str
    kind: str = ""  # decisions: original / supplementary (of which decision)
    households: int = 0
    new_builds: int = 0
    repairs: int = 0
    cancelled: int = 0
    entitlement: int = 0  # of households not cancelled
    reserved: int = 0
    released: int = 0
    paid: int = 0
    vbsp_loans: int = 0  # co-financing lent to the households: never grant money, never in the ledger

    @property
    def remaining(self) -> int:
        return self.entitlement - self.paid


@dataclass
class Reconciliation:
    sources: list[SourceLine]
    districts: list[GroupLine]  # the old map: the district each household was imported under
    decisions: list[GroupLine]
    receivables: list[finance_db.Receivable]
    problems: list[str] = field(default_factory=list)
    # The new map (two-tier, from 1 July 2025): the commune each household is in, or its old unit's successor.
    communes: list[GroupLine] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return not self.problems

    def totals(self, lines: list) -> dict[str, int]:
        keys = [f.name for f in fields(lines[0]) if f.type in ("int", int)] if lines else []
        out = {k: sum(getattr(x, k) for x in lines) for k in keys}
        if lines and hasattr(lines[0], "free"):
            out["free"] = sum(x.free for x in lines)
        if lines and hasattr(lines[0], "remaining"):
            out["remaining"] = sum(x.remaining for x in lines)
        return out

    def as_json(self) -> dict:
        def line(x) -> dict:
            d = asdict(x)
            for extra in ("free", "remaining"):
                if hasattr(x, extra):
                    d[extra] = getattr(x, extra)
            return d

        state = [s for s in self.sources if s.state_budget]
        other = [s for s in self.sources if not s.state_budget]
        return {
            "balanced": self.balanced,
            "problems": self.problems,
            "by_source": [line(s) for s in self.sources],
            "source_totals": {
                "state_budget": self.totals(state),
                "not_state_budget": self.totals(other),
                "all": self.totals(self.sources),
            },
            "by_district": [line(d) for d in self.districts],
            "by_commune": [line(c) for c in self.communes],
            "by_decision": [line(d) for d in self.decisions],
            "receivables": [asdict(r) for r in self.receivables],
        }


def commune_key(code: str, district: str | None, maps: dict) -> str:
    """The line of the new map a household is reported under: its commune of the two-tier map (or its old
    unit's successor), else its old commune named with its old district. `maps`: gazetteer.old_and_new."""
    old_district, old_commune, new_commune = maps.get(code, (district, "", None))
    return new_commune or f"{old_commune} ({old_district or NO_DISTRICT}, bản đồ cũ)"


async def reconcile(session: AsyncSession) -> Reconciliation:
    src_rows = await recon_db.sources(session)
    sources = {r.account_id: SourceLine(r.code, r.name, r.category, r.is_state_budget) for r in src_rows}

    hh = {r.code: r for r in await recon_db.households_money(session)}
    released_tranches = await recon_db.released_tranches(session)
    transfers = await recon_db.transfers(session)
    resolved = {x.pending_id for x in transfers if x.pending_id is not None}

    per_household: dict[str, dict[str, int]] = defaultdict(lambda: {"reserved": 0, "released": 0, "paid": 0})
    for x in transfers:
        src = sources.get(x.debit_account_id)
        if x.kind == "posted" and x.code == "handover":
            if (dest := sources.get(x.credit_account_id)) is not None:
                dest.handed_in += x.amount
            if src is not None:
                src.handed_out += x.amount
        elif x.kind == "posted":
            if (dest := sources.get(x.credit_account_id)) is not None:
                dest.received += x.amount
            if src is not None:
                src.reimbursed_out += x.amount
        elif x.kind == "pending" and x.id not in resolved:
            bucket = "released" if (x.household_code, x.tranche) in released_tranches else "reserved"
            if src is not None:
                setattr(src, bucket, getattr(src, bucket) + x.amount)
            per_household[x.household_code][bucket] += x.amount
        elif x.kind == "post_pending":
            if src is not None:
                src.paid += x.amount
            per_household[x.household_code]["paid"] += x.amount

    kinds = {
        r.ref: (r.kind if r.kind == "original" else f"supplementary to {r.supplements}")
        for r in await recon_db.decision_kinds(session)
    }
    loans: dict[str, int] = defaultdict(int)
    for r in await recon_db.loans(session):
        if r.status != "cancelled":
            loans[r.household_code] += int(r.amount)

    districts: dict[str, GroupLine] = {}
    by_decision: dict[str, GroupLine] = {}
    communes: dict[str, GroupLine] = {}
    maps = await gazetteer_db.old_and_new(session)
    for code, h in hh.items():
        money = per_household.get(code, {"reserved": 0, "released": 0, "paid": 0})
        views = (
            (districts, h.district or NO_DISTRICT, ""),
            (by_decision, h.decision_ref, kinds.get(h.decision_ref, "")),
            (communes, commune_key(code, h.district, maps), ""),
        )
        for table, key, kind in views:
            g = table.setdefault(key, GroupLine(key=key, kind=kind))
            g.households += 1
            g.new_builds += h.support_type == "new_build"
            g.repairs += h.support_type == "repair"
            if h.stage == "cancelled":
                g.cancelled += 1
            else:
                g.entitlement += h.entitlement
            g.reserved += money["reserved"]
            g.released += money["released"]
            g.paid += money["paid"]
            g.vbsp_loans += loans.get(code, 0)

    report = Reconciliation(
        sources=list(sources.values()),
        districts=sorted(districts.values(), key=lambda g: g.key),
        communes=sorted(communes.values(), key=lambda g: g.key),
        decisions=sorted(by_decision.values(), key=lambda g: (g.kind != "original", g.key)),
        receivables=await finance_db.receivables(session),
    )
    report.problems = await _check(session, report, sources, hh, per_household)
    orphans = [
        x.id
        for x in transfers
        if x.debit_account_id in sources and x.kind in ("pending", "post_pending") and x.household_code not in hh
    ]
    if orphans:
        report.problems.append(
            f"{len(orphans)} transfers reserve or pay source money for no registered household (ids "
            f"{', '.join(map(str, orphans[:10]))}{', …' if len(orphans) > 10 else ''})"
        )
    return report


async def _check(session, report: Reconciliation, sources: dict, hh: dict, per_household: dict) -> list[str]:
    problems = list(await ledger.check_invariants(session))
    stored = await recon_db.account_balances(session)
    for account_id, s in sources.items():
        acc = stored[account_id]
        if acc.credits_posted != s.received + s.handed_in:
            problems.append(
                f"source {s.code}: received {amount(s.received + s.handed_in, 'en')} by the transfers, "
                f"{amount(acc.credits_posted, 'en')} on its account"
            )
        if acc.debits_pending != s.reserved + s.released:
            problems.append(
                f"source {s.code}: reserved+released {amount(s.reserved + s.released, 'en')} by the transfers, "
                f"{amount(acc.debits_pending, 'en')} on its account"
            )
        if acc.debits_posted != s.paid + s.reimbursed_out + s.handed_out:
            problems.append(
                f"source {s.code}: paid+reimbursed+handed over "
                f"{amount(s.paid + s.reimbursed_out + s.handed_out, 'en')} by the transfers, "
                f"{amount(acc.debits_posted, 'en')} on its account"
            )
        if s.free < 0:
            problems.append(f"source {s.code} is below zero: {amount(s.free, 'en')}")
    for code, h in hh.items():
        money = per_household.get(code, {"reserved": 0, "released": 0, "paid": 0})
        if h.paid != money["paid"]:
            problems.append(
                f"household {code}: read model paid {amount(h.paid, 'en')}, ledger posted {amount(money['paid'], 'en')}"
            )
        if h.reserved != money["reserved"] + money["released"]:
            problems.append(
                f"household {code}: read model reserved {amount(h.reserved, 'en')}, ledger pending "
                f"{amount(money['reserved'] + money['released'], 'en')}"
            )
    for figure in ("reserved", "released", "paid"):
        views = {
            name: sum(getattr(x, figure) for x in lines)
            for name, lines in (
                ("sources", report.sources),
                ("districts", report.districts),
                ("decisions", report.decisions),
                ("communes", report.communes),
            )
        }
        if len(set(views.values())) != 1:
            problems.append(
                f"{figure} differs between views: " + ", ".join(f"{k} {amount(v, 'en')}" for k, v in views.items())
            )
    return problems


# ------------------------------------------------------------------ export (CSV and Excel)

SOURCE_COLUMNS = [
    ("code", "Mã nguồn"),
    ("name", "Tên nguồn"),
    ("category", "Loại nguồn"),
    ("state_budget", "Ngân sách nhà nước"),
    ("received", "Đã nhận"),
    ("reserved", "Đã phân bổ (giữ chỗ)"),
    ("released", "Đã chuyển, chờ xác nhận"),
    ("paid", "Đã chi"),
    ("reimbursed_out", "Cấp bù đã trả"),
    ("handed_in", "Nhận bàn giao"),
    ("handed_out", "Đã bàn giao"),
    ("free", "Còn lại"),
]
GROUP_COLUMNS = [
    ("key", "{key}"),
    ("kind", "Loại"),
    ("households", "Số hộ"),
    ("new_builds", "Xây mới"),
    ("repairs", "Sửa chữa"),
    ("cancelled", "Đã hủy"),
    ("entitlement", "Mức hỗ trợ"),
    ("reserved", "Đã phân bổ (giữ chỗ)"),
    ("released", "Đã chuyển, chờ xác nhận"),
    ("paid", "Đã chi"),
    ("remaining", "Còn phải chi"),
    ("vbsp_loans", "Vay NHCSXH (không phải hỗ trợ)"),
]
RECEIVABLE_COLUMNS = [
    ("advance_source", "Nguồn ứng trước"),
    ("districts", "Huyện"),
    ("reimbursed_by", "Nguồn cấp bù"),
    ("advanced", "Đã ứng chi cho hộ"),
    ("reimbursed", "Đã cấp bù"),
    ("outstanding", "Còn phải cấp bù"),
]


def sheets(r: Reconciliation) -> list[tuple[str, list[str], list[list]]]:
    """(sheet name, header, rows) for each table, totals last."""

    def rows(lines, columns) -> list[list]:
        return [[getattr(x, k) for k, _ in columns] for x in lines]

    def total_row(lines, columns, label="Tổng cộng") -> list:
        t = r.totals(lines)
        return [label if i == 0 else t.get(k, "") for i, (k, _) in enumerate(columns)]

    district_cols = [(k, h.format(key="Huyện / thành phố (trước 01/07/2025)")) for k, h in GROUP_COLUMNS if k != "kind"]
    commune_cols = [(k, h.format(key="Xã / phường (từ 01/07/2025)")) for k, h in GROUP_COLUMNS if k != "kind"]
    decision_cols = [(k, h.format(key="Quyết định")) for k, h in GROUP_COLUMNS]
    state = [s for s in r.sources if s.state_budget]
    other = [s for s in r.sources if not s.state_budget]
    return [
        (
            "Theo nguồn",
            [h for _, h in SOURCE_COLUMNS],
            rows(r.sources, SOURCE_COLUMNS)
            + [
                total_row(state, SOURCE_COLUMNS, "Cộng NSNN"),
                total_row(other, SOURCE_COLUMNS, "Cộng ngoài NSNN"),
                total_row(r.sources, SOURCE_COLUMNS),
            ],
        ),
        (
            "Theo huyện",
            [h for _, h in district_cols],
            rows(r.districts, district_cols) + [total_row(r.districts, district_cols)],
        ),
        (
            "Theo xã (mới)",
            [h for _, h in commune_cols],
            rows(r.communes, commune_cols) + [total_row(r.communes, commune_cols)],
        ),
        (
            "Theo quyết định",
            [h for _, h in decision_cols],
            rows(r.decisions, decision_cols) + [total_row(r.decisions, decision_cols)],
        ),
        ("Cấp bù", [h for _, h in RECEIVABLE_COLUMNS], rows(r.receivables, RECEIVABLE_COLUMNS)),
    ]


def write_csv(r: Reconciliation, folder: Path) -> list[Path]:
    """One CSV per table, UTF-8 with a byte-order mark so Excel shows the Vietnamese letters."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {
        "Theo nguồn": "by_source",
        "Theo huyện": "by_district",
        "Theo xã (mới)": "by_commune",
        "Theo quyết định": "by_decision",
        "Cấp bù": "receivables",
    }
    out = []
    for title, header, body in sheets(r):
        path = folder / f"reconciliation_{names[title]}.csv"
        with path.open("w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow(safe_row(header))
            w.writerows(safe_row(row) for row in body)
        out.append(path)
    return out


def write_xlsx(r: Reconciliation, path: Path) -> Path:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    wb.remove(wb.active)
    for title, header, body in sheets(r):
        ws = wb.create_sheet(title)
        append_row(ws, header)
        for row in body:
            append_row(ws, row)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in ws.iter_rows(min_row=2):
            if isinstance(row[0].value, str) and row[0].value.startswith("Cộng") or row[0].value == "Tổng cộng":
                for cell in row:
                    cell.font = Font(bold=True)
            for cell in row:
                if isinstance(cell.value, int) and not isinstance(cell.value, bool):
                    cell.number_format = "#,##0"
        for i, head in enumerate(header, start=1):
            width = max(
                [len(str(head))]
                + [
                    len(f"{amount(row[i - 1], 'en')}" if isinstance(row[i - 1], int) else str(row[i - 1]))
                    for row in body
                ]
            )
            ws.column_dimensions[get_column_letter(i)].width = min(width + 2, 60)
        ws.freeze_panes = "B2"
    status = wb.create_sheet("Kiểm tra")
    append_row(status, ["Cân đối đến từng đồng" if r.balanced else "CHÊNH LỆCH"])
    for p in r.problems:
        append_row(status, [p])
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path
