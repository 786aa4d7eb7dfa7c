"""Record one JSON history per workflow path of the current release into this folder.

    python starter.py stack up && python starter.py seed-demo
    python -m tests.histories.capture

(The paths of the current release, sealed by the payload codec, timers included, are recorded by
capture_sealed.py next to this file, on the suite's own servers.)

It runs its own worker on a fresh task queue, with a bank process of its own scripted to fail one household's
first attempt, against the stack's Temporal and PostgreSQL. The suite replays every file here against the
current workflow code (tests/test_replay.py): a change that would break households already in flight
fails CI. Files of earlier releases stay: the households they stand for may still be open.

Releases: the four files without a prefix are release 2025.1 (one reservation, posted at settlement);
`tranches_*` and `batch_*` are release 2025.2 (tranche payouts through the payment channel);
`batch_authorise_asks_every_household` is a batch from before it skipped done households by the read
model (patch `batch-skip-from-read-model`).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from core.client import connect
from core.settings import get_settings
from db import users
from db.engine import make_engine, make_sessions
from finance.channel import HttpBank
from models.finance import BatchAction, BatchSelection, PayoutBatchInput
from models.household import Household, Step, workflow_id_for
from operations import payouts, sample
from operations.imports import register, start_workflows
from runtime.worker import make_worker
from tests.conftest import FRONT_DOOR, TEST_KEYS_FILE, BankProcess, callback_receiver, drive_one, take_step, to_csv

HERE = Path(__file__).parent


async def main() -> None:
    settings = get_settings().model_copy(update={"payload_keys_file": TEST_KEYS_FILE, "payload_keys": ""})
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    client = await connect(settings)
    prefix = f"HIST{uuid.uuid4().hex[:4].upper()}"
    rows = sample.households(6, seed=2025, prefix=prefix)
    for i, row in enumerate(rows):
        row["cccd"] = f"0209980{uuid.uuid4().int % 10**5:05d}"[:12]
        row["support_type"] = "repair" if i == 1 else "new_build"
        row["beneficiary_group"] = "poor"
        row["programme"] = "MTQG-GNBV" if i == 0 else ""
    items = [Household(**r) for r in rows]
    full_new, full_repair, retried, cancelled, batched_a, batched_b = items
    # A bank process of the capture's own, refusing `retried`'s first attempt; its callbacks come back here.
    bank = BankProcess(Path(tempfile.mkdtemp(prefix="capture-bank-")), fail_match=(f"^{retried.code}-",)).start()
    task_queue = f"capture-{uuid.uuid4()}"
    async with (
        callback_receiver(client, bank.secret) as callback_url,
        HttpBank(bank.url, secret=bank.secret, callback_url=callback_url) as channel,
        make_worker(client, sessions, settings, task_queue=task_queue, channel=channel),
    ):
        _, registered, policy = await register(sessions, to_csv(items), "histories.csv", sample.PROVINCE_USER)
        await start_workflows(client, task_queue, registered, policy)
        for h in (full_new, full_repair, retried):
            await drive_one(client, sessions, h)

        await drive_one(client, sessions, cancelled, payouts=False)
        await take_step(client, sessions, cancelled.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
        await take_step(
            client, sessions, cancelled.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U"]
        )
        assert await payouts.wait_for_payments(sessions, [cancelled.code]) == 0
        await take_step(
            client,
            sessions,
            cancelled.code,
            Step.CANCEL,
            sample.district_user(cancelled.district),
            reason="hộ chuyển đi nơi khác",
        )

        for h in (batched_a, batched_b):
            await drive_one(client, sessions, h, payouts=False)
        async with sessions() as s:
            actor = await users.require_actor(s, "tc.hoang")
        selection = BatchSelection(codes=[batched_a.code, batched_b.code])
        batch_input = payouts.sign_batch(
            FRONT_DOOR,
            PayoutBatchInput(
                batch_id=payouts.batch_id_for(BatchAction.AUTHORISE, 1, selection, prefix),
                action=BatchAction.AUTHORISE,
                tranche=1,
                selection=selection,
                actor=actor,
                evidence=["BATCH"],
            ),
        )
        batch = await payouts.run_batch(client, task_queue, batch_input)
        handle = client.get_workflow_handle(f"payout-batch-{batch.batch_id}")
        first_run = await handle.fetch_history()
        # The re-run (both skipped), signed afresh: a signed batch runs once (activities/batches.py).
        await payouts.run_batch(client, task_queue, payouts.sign_batch(FRONT_DOOR, batch_input))

        named = (
            ("tranches_full_path_new_build", workflow_id_for(full_new.code)),
            ("tranches_full_path_repair", workflow_id_for(full_repair.code)),
            ("tranches_payment_failed_then_retried", workflow_id_for(retried.code)),
            ("tranches_cancel_after_first_tranche", workflow_id_for(cancelled.code)),
            ("batch_authorise_rerun", f"payout-batch-{batch.batch_id}"),
        )
        path = HERE / "batch_authorise.json"
        path.write_text(first_run.to_json())
        print(f"wrote {path.name} ({len(first_run.events)} events)")
        for name, workflow_id in named:
            handle = client.get_workflow_handle(workflow_id)
            await handle.result()
            history = await handle.fetch_history()
            path = HERE / f"{name}.json"
            path.write_text(history.to_json())
            print(f"wrote {path.name} ({len(history.events)} events)")
        for h in (batched_a, batched_b):
            await client.get_workflow_handle(workflow_id_for(h.code)).terminate("history captured")
    bank.stop()
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
