"""Demo reference data: officers, funding sources with their rules, and the budget they have received.
Safe to re-run."""

from __future__ import annotations

from dataclasses import dataclass, field

from db import ledger, users
from db.engine import Sessions
from operations import sample


@dataclass(frozen=True)
class SourceSeed:
    code: str
    name: str
    category: str
    is_state_budget: bool
    budget: int
    receipt_ref: str
    priority: int = 100
    rules: dict = field(default_factory=dict)


DEMO_SOURCES = (
    SourceSeed(
        "MTQG-GNBV",
        "Chương trình MTQG giảm nghèo bền vững (ngân sách trung ương)",
        "national_target_programme",
        True,
        600_000_000,
        "Giao dự toán MTQG GNBV 2025 đợt 1",
        priority=10,
        rules={"programmes": ["MTQG-GNBV"]},
    ),
    SourceSeed(
        "MTQG-DTTS",
        "Chương trình MTQG phát triển KT-XH vùng đồng bào DTTS và miền núi",
        "national_target_programme",
        True,
        800_000_000,
        "Giao dự toán MTQG DTTS 2025 đợt 1",
        priority=10,
        rules={"programmes": ["MTQG-DTTS"]},
    ),
    SourceSeed(
        "ADV-LOCBINH",
        "Ngân sách huyện Lộc Bình ứng trước cho hộ thuộc MTQG (chờ cấp bù)",
        "district_advance",
        True,
        300_000_000,
        "QĐ ứng trước ngân sách huyện Lộc Bình",
        priority=20,
        rules={"programmes": ["MTQG-GNBV"], "districts": ["Lộc Bình"], "reimbursed_by": "MTQG-GNBV"},
    ),
    SourceSeed(
        "NS-TINH",
        "Ngân sách tỉnh (tiết kiệm 5% chi thường xuyên 2024)",
        "provincial_budget",
        True,
        2_500_000_000,
        "QĐ phân bổ tiết kiệm chi 2024",
        priority=10,
    ),
    SourceSeed(
        "BAO3-MTTQ",
        "Kinh phí ủng hộ bão số 3 (Yagi) còn dư, MTTQ tỉnh chuyển sang",
        "storm_relief",
        False,
        700_000_000,
        "Văn bản MTTQ tỉnh chuyển kinh phí bão số 3",
        priority=20,
    ),
    SourceSeed(
        "MTTQ-VD", "Quỹ vận động của Ủy ban MTTQ tỉnh", "donation", False, 3_000_000_000, "Tiền ủng hộ đợt 1/2025"
    ),
)


async def seed_demo(sessions: Sessions) -> dict[str, int]:
    async with sessions() as session, session.begin():
        n_users = await users.upsert(session, sample.users())
        for s in DEMO_SOURCES:
            await ledger.create_source(
                session,
                code=s.code,
                name=s.name,
                category=s.category,
                is_state_budget=s.is_state_budget,
                rules=s.rules,
                priority=s.priority,
            )
            await ledger.receive(
                session, key=f"seed:{s.code}:budget-1", source=s.code, amount=s.budget, memo=s.receipt_ref
            )
    return {"users": n_users, "sources": len(DEMO_SOURCES)}
