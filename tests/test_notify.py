"""The outbox dispatcher: delivers through the channel, retries failures with back-off, parks the hopeless."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select, update

from db import outbox
from db.schema import outbox as outbox_table
from notify.channels import FileChannel
from notify.dispatcher import Dispatcher


class FlakyChannel:
    """A fake external channel (an SMS gateway that is down)."""

    def __init__(self, fail_for: set[str]) -> None:
        self.fail_for = fail_for
        self.sent: list[str] = []

    async def send(self, message) -> None:
        if message.idempotency_key in self.fail_for:
            raise ConnectionError("gateway unreachable")
        self.sent.append(message.idempotency_key)


async def _enqueue(sessions, n: int) -> list[str]:
    keys = [f"t-{uuid.uuid4()}" for _ in range(n)]
    async with sessions() as s, s.begin():
        for k in keys:
            assert await outbox.enqueue(
                s, key=k, household_code=None, kind="task", channel="agency", recipient="UBND xã", subject="s", body="b"
            )
        assert not await outbox.enqueue(
            s,
            key=keys[0],
            household_code=None,
            kind="task",
            channel="agency",
            recipient="UBND xã",
            subject="s",
            body="b",
        )
    return keys


async def _status(sessions, key):
    async with sessions() as s:
        return (
            await s.execute(
                select(outbox_table.c.status, outbox_table.c.attempts).where(outbox_table.c.idempotency_key == key)
            )
        ).one()


async def _make_due(sessions, key):
    async with sessions() as s, s.begin():
        await s.execute(
            update(outbox_table)
            .where(outbox_table.c.idempotency_key == key)
            .values(next_attempt_at=outbox_table.c.created_at)
        )


async def test_failures_are_retried_then_parked_and_the_rest_delivered(sessions, settings):
    good, bad = await _enqueue(sessions, 2)
    channel = FlakyChannel({bad})
    dispatcher = Dispatcher(sessions, channel, settings.model_copy(update={"notify_max_attempts": 3}))
    await dispatcher.drain()
    assert good in channel.sent and bad not in channel.sent
    assert tuple(await _status(sessions, good)) == ("sent", 1)
    assert tuple(await _status(sessions, bad)) == ("pending", 1)

    for _ in range(2):
        await _make_due(sessions, bad)
        await dispatcher.drain()
    assert tuple(await _status(sessions, bad)) == ("dead", 3)
    assert channel.sent.count(good) == 1


async def test_the_file_channel_writes_one_json_line_per_message(sessions, settings, tmp_path):
    keys = await _enqueue(sessions, 3)
    path = tmp_path / "out.jsonl"
    await Dispatcher(sessions, FileChannel(path), settings).drain()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert set(keys) <= {line["key"] for line in lines}
    assert all(line["to"] == "UBND xã" for line in lines if line["key"] in keys)
