"""Record one JSON history per workflow path into this folder, from the running stack.

    python -m tests.histories.capture        (after `python starter.py stack up` and `seed-demo`)

The suite replays every file here against the current workflow code (tests/test_replay.py): a change
that would break households already in flight fails CI. Re-capture only for a new release's paths;
keep the old files.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from core.settings import get_settings
from core.temporal import connect
from db.engine import make_engine, make_sessions
from models.household import Household, Step, workflow_id_for
from operations import sample
from operations.actions import Refusal, take_step
from operations.demo import drive_one
from operations.imports import register, start_workflows
from tests.conftest import to_csv

HERE = Path(__file__).parent


async def main() -> None:
    settings = get_settings()
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    client = await connect(settings)
    prefix = f"HIST{uuid.uuid4().hex[:4].upper()}"
    rows = sample.households(4, seed=4242, prefix=prefix)
    for i, row in enumerate(rows):
        row["cccd"] = f"0209990{uuid.uuid4().int % 10**5:05d}"[:12]
        row["support_type"] = "repair" if i == 1 else "new_build"
    items = [Household(**r) for r in rows]
    _, registered, policy = await register(sessions, to_csv(items), "histories.csv", sample.PROVINCE_USER)
    await start_workflows(client, settings.temporal_task_queue, registered, policy)
    full_new, full_repair, sent_back, cancelled = items

    await drive_one(client, sessions, full_new)
    await drive_one(client, sessions, full_repair)

    commune = sample.commune_user(sent_back.district, sent_back.commune)
    district = sample.district_user(sent_back.district)
    try:  # a refused update leaves no trace in history; an accepted-then-failed one does
        await take_step(client, sessions, sent_back.code, Step.APPROVE, district, evidence=["QĐ"])
    except Refusal:
        pass
    await take_step(client, sessions, sent_back.code, Step.VERIFY, commune, evidence=["BB"])
    await take_step(client, sessions, sent_back.code, Step.SEND_BACK, district, reason="thiếu hồ sơ")
    await drive_one(client, sessions, sent_back)

    commune = sample.commune_user(cancelled.district, cancelled.commune)
    district = sample.district_user(cancelled.district)
    await take_step(client, sessions, cancelled.code, Step.VERIFY, commune, evidence=["BB"])
    await take_step(client, sessions, cancelled.code, Step.APPROVE, district, evidence=["QĐ"])
    await take_step(client, sessions, cancelled.code, Step.ALLOCATE, "tc.hoang", evidence=["PB"], source="MTTQ-VD")
    await take_step(client, sessions, cancelled.code, Step.CANCEL, district, reason="không còn đủ điều kiện")

    for name, h in (("full_path_new_build", full_new), ("full_path_repair", full_repair),
                    ("send_back_then_full_path", sent_back), ("cancel_after_allocation", cancelled)):  # fmt: skip
        handle = client.get_workflow_handle(workflow_id_for(h.code))
        await handle.result()
        history = await handle.fetch_history()
        path = HERE / f"{name}.json"
        path.write_text(history.to_json())
        print(f"wrote {path.name} ({len(history.events)} events)")
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
