"""The simulated bank as a process with a durable book: an id is paid once, other terms under the same id
are refused, a kill -9 forgets nothing it acknowledged, callbacks are retried until the receiver is up, and
the receiver refuses a callback that is not signed with the shared secret."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from temporalio.api.enums.v1 import EventType

from core.settings import ROOT, Settings
from finance import callbacks
from finance.channel import HttpBank, InstructionConflict
from models.finance import PaymentInstruction, TrancheStatus
from runtime.stack import Stack, free_port, port_open
from tests.conftest import (
    TEST_CALLBACK_SECRET,
    bank_process,
    callback_receiver,
    enroll,
    make_households,
    running_worker,
    tranche_is,
    wait_until,
)
from tests.test_payments import release_first_tranche


def instruction(code: str = "TBANK1-00001", amount: int = 42_000_000, **kw) -> PaymentInstruction:
    terms = {"tranche": 1, "attempt": 1, "amount": amount, "payee": "Nguyễn Văn A", "released_by": "kb.tinh"}
    return PaymentInstruction(
        payment_id=f"{code}-A1-T1-1", workflow_id=f"household-{code}", household_code=code, **(terms | kw)
    )


async def test_an_instruction_submitted_twice_is_paid_once(tmp_path):
    with bank_process(tmp_path / "bank") as bank:
        async with HttpBank(bank.url, secret=bank.secret) as channel:
            instr = instruction()
            await channel.submit(instr)
            await channel.submit(instr)

            async def answered():
                status = await channel.status(instr.payment_id)
                return status if status.state != "pending" else None

            status = await wait_until(answered)
            await channel.submit(instr)  # again after the answer: still the one payment
            assert (status.state, status.reason) == ("confirmed", None) and status.bank_ref.startswith("SIM")
            paid = [(p["payment_id"], p["amount"], p["state"], p["bank_ref"]) for p in await channel.statement()]
            assert paid == [(instr.payment_id, 42_000_000, "confirmed", status.bank_ref)]
            assert (await channel.status("TBANK1-00001-A1-T2-1")).state == "unknown"


async def test_the_same_id_with_another_amount_is_refused(tmp_path):
    with bank_process(tmp_path / "bank", hold=True) as bank:
        async with HttpBank(bank.url, secret=bank.secret) as channel:
            await channel.submit(instruction())
            body = json.dumps(instruction(amount=43_000_000).model_dump(mode="json")).encode()
            async with httpx.AsyncClient() as http:
                r = await http.post(
                    f"{bank.url}/instructions", content=body, headers=callbacks.signed_headers(bank.secret, body)
                )
            assert r.status_code == 409 and "amount" in r.json()["detail"]
            for other in (instruction(amount=43_000_000), instruction(payee="Người Khác")):
                with pytest.raises(InstructionConflict, match="already accepted with other terms"):
                    await channel.submit(other)
            assert [(p["amount"], p["state"]) for p in await channel.statement()] == [(42_000_000, "pending")]


async def test_a_bank_killed_after_accepting_keeps_the_instruction_and_answers_it_after_restart(tmp_path):
    with bank_process(tmp_path / "bank", hold=True) as bank:
        async with HttpBank(bank.url, secret=bank.secret) as channel:
            instr = instruction()
            await channel.submit(instr)
            assert (await channel.status(instr.payment_id)).state == "pending"
            bank.kill()  # SIGKILL: no chance to flush anything it had not made durable
            bank.start()
            assert [(p["payment_id"], p["state"]) for p in await channel.statement()] == [(instr.payment_id, "pending")]
            bank.kill()
            bank.start(hold=False)  # the same book, now answering what was pending

            async def confirmed():
                return (await channel.status(instr.payment_id)).state == "confirmed"

            await wait_until(confirmed)
            await channel.submit(instr)  # the engine's escalation re-sends the same id: nothing new
            assert [(p["payment_id"], p["state"]) for p in await channel.statement()] == [
                (instr.payment_id, "confirmed")
            ]


async def test_a_callback_to_a_receiver_down_at_first_is_retried_and_arrives(client, sessions, settings, tmp_path):
    port = free_port()  # nothing listens here yet
    url = f"http://127.0.0.1:{port}{callbacks.CALLBACK_PATH}"
    with bank_process(tmp_path / "bank", callback_backoff=0.1) as bank:
        async with HttpBank(bank.url, secret=bank.secret, callback_url=url) as channel:
            async with running_worker(client, sessions, settings, channel=channel) as tq:
                (h,) = await enroll(client, sessions, tq, make_households(1, beneficiary_group="poor"))
                await release_first_tranche(client, sessions, h)

                async def refused_twice():
                    rows = await bank.statement(h.code)
                    return (
                        rows if rows and rows[0]["state"] == "confirmed" and rows[0]["callback_attempts"] >= 2 else None
                    )

                (row,) = await wait_until(refused_twice)
                assert row["callback_delivered_at"] is None
                assert (await tranche_is(client, h.code, TrancheStatus.RELEASED)()) is not None, "nobody woke it"
                async with callback_receiver(client, bank.secret, port=port):
                    state = await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
                    assert state.tranches[0].payment_id == row["payment_id"]
                (row,) = await bank.statement(h.code)
                assert row["callback_delivered_at"] is not None


async def signals(client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED for e in history.events)


async def signals_after(client, workflow_id: str, expected: int) -> int:
    """The signals in the history once it shows `expected` of them (or the count after 10 s): a signal that
    arrives while a workflow task is running is buffered by the server and enters the history only when
    that task completes."""
    for _ in range(100):
        if (n := await signals(client, workflow_id)) >= expected:
            break
        await asyncio.sleep(0.1)
    return n


async def test_a_callback_with_a_bad_signature_is_refused_and_signals_nothing(client, sessions, settings):
    async with running_worker(client, sessions, settings) as tq:
        (h,) = await enroll(client, sessions, tq, make_households(1))
        body = f'{{"payment_id": "{h.code}-A1-T1-1"}}'.encode()
        async with callback_receiver(client) as url, httpx.AsyncClient() as http:
            stale = int(time.time()) - callbacks.MAX_SKEW_SECONDS - 60  # a signed body copied and sent again later
            refused = [
                callbacks.signed_headers("not-the-secret", body),
                {},
                callbacks.signed_headers(TEST_CALLBACK_SECRET, body.replace(b"T1-1", b"T2-1")),
                {
                    callbacks.TIMESTAMP_HEADER: str(stale),
                    callbacks.SIGNATURE_HEADER: callbacks.sign(TEST_CALLBACK_SECRET, body, stale),
                },
            ]
            for headers in refused:
                r = await http.post(url, content=body, headers=headers)
                assert r.status_code == 401
            assert await signals(client, h.workflow_id) == 0
            good = callbacks.signed_headers(TEST_CALLBACK_SECRET, body)
            r = await http.post(url, content=body, headers=good)
            assert (r.status_code, r.json()) == (202, {"payment_id": f"{h.code}-A1-T1-1"})
            assert await signals_after(client, h.workflow_id, 1) == 1  # the good one, as a wake-up only


async def test_only_the_engine_may_instruct_a_payment(tmp_path):
    """Payment ids are predictable: an instruction not signed with the engine's secret (sent first, to a
    payee of the sender's) is refused, and the bank holds nothing."""
    with bank_process(tmp_path / "bank") as bank:
        body = json.dumps(instruction().model_dump(mode="json") | {"payee": "Kẻ Mạo Danh"}).encode()
        async with httpx.AsyncClient(base_url=bank.url) as http:
            for headers in ({}, callbacks.signed_headers("not-the-secret", body)):
                assert (await http.post("/instructions", content=body, headers=headers)).status_code == 401
        assert await bank.statement() == []
        async with HttpBank(bank.url, secret=bank.secret) as channel:
            await channel.submit(instruction())
        assert [p["payee"] for p in await bank.statement()] == [instruction().payee]


def test_the_worker_refuses_to_start_without_a_payment_channel(tmp_path):
    env = {**os.environ, "PAYMENT_CHANNEL": "", "STATE_DIR": str(tmp_path), "LOG_JSON": "true"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "worker.py")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert done.returncode == 2
    assert "PAYMENT_CHANNEL is not set" in done.stderr


def test_the_stack_starts_its_bank_once_and_stops_it(tmp_path):
    s = Settings(state_dir=tmp_path, bank_url=f"http://127.0.0.1:{free_port()}", payment_delay_seconds=0.05)
    stack = Stack(s)
    bank = stack.bank()
    assert stack.embedded_bank and bank.name == "bank" and bank.book_dir == tmp_path / "bank"
    assert Stack(Settings(state_dir=tmp_path, bank_url="http://bank.example:8070")).embedded_bank is False
    try:
        assert bank.start(stack.env()) is True
        assert bank.pid_file == tmp_path / "bank.pid" and port_open(bank.host, bank.port)
        assert bank.start(stack.env()) is False, "a running bank is reused"
        assert httpx.get(f"{bank.url}/health").json() == {"status": "ok"}
        assert (tmp_path / "bank" / "book.sqlite3").exists()
    finally:
        assert bank.stop() is True
    assert not bank.running() and bank.stop() is False


async def test_the_web_app_serves_the_callback_receiver(client, sessions, settings):
    from web.app import create_app

    async with running_worker(client, sessions, settings) as tq:
        (h,) = await enroll(client, sessions, tq, make_households(1))
        app = create_app(settings, sessions=sessions, client=client)
        body = f'{{"payment_id": "{h.code}-A1-T1-1"}}'.encode()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as http:
            bad = callbacks.signed_headers("wrong", body)
            assert (await http.post(callbacks.CALLBACK_PATH, content=body, headers=bad)).status_code == 401
            assert await signals(client, h.workflow_id) == 0
            good = callbacks.signed_headers(settings.callback_secret(), body)
            assert (await http.post(callbacks.CALLBACK_PATH, content=body, headers=good)).status_code == 202
            assert await signals_after(client, h.workflow_id, 1) == 1
            unknown = b'{"payment_id": "NOBODY-00001-A1-T1-1"}'
            sig = callbacks.signed_headers(settings.callback_secret(), unknown)
            assert (await http.post(callbacks.CALLBACK_PATH, content=unknown, headers=sig)).status_code == 404


async def test_an_answer_for_other_terms_than_the_engine_sent_is_recorded_as_failed_not_paid(
    sessions, settings, tmp_path
):
    """The bank answers 'confirmed' for the id, but holds another payee than the engine sent: the engine's
    check turns the answer into a failure naming what differs, so no tranche is posted as paid to them."""
    from activities.payments import PaymentActivities
    from db import finance as finance_db
    from operations import sample
    from operations.imports import register
    from tests.conftest import to_csv

    (h,) = make_households(1)
    await register(sessions, to_csv([h]), "t.csv", sample.PROVINCE_USER)
    sent = instruction(h.code)
    async with sessions() as s, s.begin():
        await finance_db.save_instruction(s, sent, HttpBank.name)
    with bank_process(tmp_path / "bank") as bank:
        async with HttpBank(bank.url, secret=bank.secret) as channel:
            await channel.submit(sent.model_copy(update={"payee": "Kẻ Mạo Danh"}))
            await wait_until(lambda: _state_is(channel, sent.payment_id, "confirmed"))
            check = await PaymentActivities(sessions, channel, settings.payment_channel_user).check_payment(
                sent.payment_id
            )
    assert check.status.state == "failed" and "another payee" in check.status.reason
    assert "amount" not in check.status.reason and "Kẻ Mạo Danh" not in check.status.reason


async def _state_is(channel, payment_id: str, state: str) -> bool:
    return (await channel.status(payment_id)).state == state
