"""Drive imported households through all six stages as the officers responsible for each step would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from temporalio.client import Client

from db import households
from db.engine import Sessions
from models.household import FORWARD, Household, Stage, Step
from operations import sample
from operations.actions import Refusal, household_state, take_step

# Funding sources in the order Finance draws on them in the demo.
DEMO_SOURCE_ORDER = ("NS-TINH", "MTTQ-VD")
# For each forward step: the stage it is taken in and the stage it leads to.
STEP_STAGES = {step: (stage, to) for stage, (step, to) in FORWARD.items()}


def plan(h: Household) -> list[tuple[Step, str, list[str]]]:
    """Who takes each step on this household, with the evidence they attach."""
    commune = sample.commune_user(h.district, h.commune)
    district = sample.district_user(h.district)
    first_finance, second_finance = sample.FINANCE_USERS
    return [
        (Step.VERIFY, commune, [f"BB-BINH-XET/{h.code}"]),
        (Step.APPROVE, district, [h.decision_ref]),
        (Step.ALLOCATE, first_finance, [f"QD-PHAN-BO/{h.code}"]),
        (Step.COMPLETE_CONSTRUCTION, commune, [f"BC-HOAN-THANH/{h.code}"]),
        (Step.ACCEPT, district, [f"BB-NGHIEM-THU/{h.code}"]),
        (Step.SETTLE, second_finance, [f"UNC/{h.code}"]),
    ]


@dataclass
class DriveResult:
    closed: int = 0
    already_closed: int = 0
    steps: int = 0
    failures: dict[str, str] = field(default_factory=dict)


async def drive_one(client: Client, sessions: Sessions, h: Household, sources=DEMO_SOURCE_ORDER) -> int:
    """Take every remaining step on one household. Returns the number of steps taken."""
    async with sessions() as session:
        row = await households.get(session, h.code)
    if row is not None and Stage(row.stage).terminal:
        return 0  # the read model is written in the same transaction as the closing step
    state = await household_state(client, h.code)
    taken = 0
    for step, user, evidence in plan(h):
        if state.stage.terminal:
            break
        if STEP_STAGES[step][0] != state.stage:
            continue
        if step is Step.ALLOCATE:
            await _allocate(client, sessions, h, user, evidence, sources)
        else:
            await take_step(client, sessions, h.code, step, user, evidence=evidence)
        taken += 1
        state = state.model_copy(update={"stage": STEP_STAGES[step][1]})
    return taken


async def _allocate(client, sessions, h: Household, user: str, evidence: list[str], sources) -> None:
    last: Refusal | None = None
    for source in sources:
        try:
            await take_step(client, sessions, h.code, Step.ALLOCATE, user, evidence=evidence, source=source)
            return
        except Refusal as refusal:
            if refusal.rule != "InsufficientFunds":
                raise
            last = refusal
    assert last is not None
    raise last


async def drive_all(
    client: Client,
    sessions: Sessions,
    items: list[Household],
    *,
    concurrency: int = 16,
    on_done: Callable[[str], None] | None = None,
) -> DriveResult:
    result = DriveResult()
    gate = asyncio.Semaphore(concurrency)

    async def one(h: Household) -> None:
        async with gate:
            try:
                taken = await drive_one(client, sessions, h)
                result.steps += taken
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
