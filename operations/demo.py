"""Drive imported households through the whole programme as the officers responsible for each step would:
verification, approval, allocation by the allocation policy, construction with its progress report,
payment of each tranche (authorised by Finance, released by the treasury, confirmed by the payment
channel), acceptance and settlement."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from temporalio.client import Client

from core.errors import Refusal
from core.signing import SigningRing
from db import households
from db.engine import Sessions
from models.finance import REPORTED_MILESTONES, TrancheStatus
from models.household import Household, Stage, Step
from models.state import HouseholdState
from operations import sample
from operations.actions import household_state, take_step

Action = tuple[Step, str, dict]  # step, user, keyword arguments for take_step


def next_action(state: HouseholdState, h: Household, *, payouts: bool = True) -> Action | str | None:
    """The next thing an officer does on this household: an action, "wait" (for the payment channel),
    "payout" (a tranche waits for Finance or the treasury and `payouts` is off), or None (closed)."""
    commune = sample.commune_user(h.district, h.commune)
    district = sample.district_user(h.district)
    first_finance, second_finance = sample.FINANCE_USERS
    stage = state.stage
    if stage.terminal:
        return None
    payout_by = {
        TrancheStatus.DUE: (Step.AUTHORISE_PAYOUT, first_finance, "QD-DUYET-CHI"),
        TrancheStatus.AUTHORISED: (Step.RELEASE_PAYOUT, sample.TREASURY_USER, "UNC"),
    }
    for t in state.tranches:
        if t.status in payout_by:
            if not payouts:
                return "payout"
            step, user, doc = payout_by[t.status]
            return step, user, {"tranche": t.n, "evidence": [f"{doc}/{h.code}/{t.n}"]}
    if stage is Stage.CONSTRUCTION:
        planned = [
            t for t in state.tranches if t.status is TrancheStatus.PLANNED and t.milestone in REPORTED_MILESTONES
        ]
        if planned:
            return (
                Step.REPORT_PROGRESS,
                commune,
                {"milestone": planned[0].milestone.value, "evidence": [f"BB-TIEN-DO/{h.code}"]},
            )
        if any(t.status is TrancheStatus.RELEASED for t in state.tranches):
            return "wait"
    if stage is Stage.SETTLEMENT and any(t.status is not TrancheStatus.PAID for t in state.tranches):
        return "wait"
    return {
        Stage.VERIFICATION: (Step.VERIFY, commune, {"evidence": [f"BB-BINH-XET/{h.code}"]}),
        Stage.APPROVAL: (Step.APPROVE, district, {"evidence": [h.decision_ref]}),
        Stage.FUND_ALLOCATION: (Step.ALLOCATE, first_finance, {"evidence": [f"QD-PHAN-BO/{h.code}"]}),
        Stage.CONSTRUCTION: (Step.COMPLETE_CONSTRUCTION, commune, {"evidence": [f"BC-HOAN-THANH/{h.code}"]}),
        Stage.ACCEPTANCE: (Step.ACCEPT, district, {"evidence": [f"BB-NGHIEM-THU/{h.code}"]}),
        Stage.SETTLEMENT: (Step.SETTLE, second_finance, {"evidence": [f"QUYET-TOAN/{h.code}"]}),
    }[stage]


@dataclass
class DriveResult:
    closed: int = 0
    already_closed: int = 0
    steps: int = 0
    failures: dict[str, str] = field(default_factory=dict)


async def drive_one(
    client: Client,
    sessions: Sessions,
    h: Household,
    *,
    signer: SigningRing,
    payouts: bool = True,
    wait_timeout: float = 60.0,
) -> int:
    """Take every remaining step on one household (with `payouts` off, stop where a tranche waits for
    Finance or the treasury), each signed with the demo's front-door ring (`signer`) as the officer whose
    turn it is. Returns the number of steps taken."""
    async with sessions() as session:
        row = await households.get(session, h.code)
    if row is not None and Stage(row.stage).terminal:
        return 0  # the read model is written in the same transaction as the closing step
    taken = 0
    waited = 0.0
    while True:
        state = await household_state(client, h.code)
        action = next_action(state, h, payouts=payouts)
        if action is None or action == "payout":
            return taken
        if action == "wait":
            if waited > wait_timeout:
                raise Refusal("PaymentNotConfirmed", f"household {h.code}: the payment channel has not answered")
            await asyncio.sleep(0.1)
            waited += 0.1
            continue
        step, user, kwargs = action
        result = await take_step(client, sessions, h.code, step, user, signer=signer, **kwargs)
        taken += 1
        if getattr(result, "to_stage", None) is not None and result.to_stage.terminal:
            return taken  # a closed workflow answers queries only by replaying its history: do not ask


async def drive_all(
    client: Client,
    sessions: Sessions,
    items: list[Household],
    *,
    signer: SigningRing,
    concurrency: int = 16,
    payouts: bool = True,
    on_done: Callable[[str], None] | None = None,
) -> DriveResult:
    result = DriveResult()
    gate = asyncio.Semaphore(concurrency)

    async def one(h: Household) -> None:
        async with gate:
            try:
                taken = await drive_one(client, sessions, h, signer=signer, payouts=payouts)
                result.steps += taken
                async with sessions() as session:
                    row = await households.get(session, h.code)
                if row is not None and Stage(row.stage).terminal:
                    if taken:
                        result.closed += 1
                    else:
                        result.already_closed += 1
            except Refusal as refusal:
                result.failures[h.code] = str(refusal)
            finally:
                if on_done:
                    on_done(h.code)

    await asyncio.gather(*(one(h) for h in items))
    return result
