"""Demo reference data: officers, funding sources and the budget they have received. Safe to re-run."""

from __future__ import annotations

from dataclasses import dataclass

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


DEMO_SOURCES = (
    SourceSeed("NS-TINH", "Ngân sách tỉnh (tiết kiệm 5% chi thường xuyên 2024)", "provincial_budget", True,
               4_000_000_000, "QĐ phân bổ tiết kiệm chi 2024"),
    SourceSeed("MTTQ-VD", "Quỹ vận động của Ủy ban MTTQ tỉnh", "donation", False,
               3_000_000_000, "Tiền ủng hộ đợt 1/2025"),
)  # fmt: skip


async def seed_demo(sessions: Sessions) -> dict[str, int]:
    async with sessions() as session, session.begin():
        n_users = await users.upsert(session, sample.users())
        for s in DEMO_SOURCES:
            await ledger.create_source(
                session, code=s.code, name=s.name, category=s.category, is_state_budget=s.is_state_budget
            )
            await ledger.receive(
                session, key=f"seed:{s.code}:budget-1", source=s.code, amount=s.budget, memo=s.receipt_ref
            )
    return {"users": n_users, "sources": len(DEMO_SOURCES)}
