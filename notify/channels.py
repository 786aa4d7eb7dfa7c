"""Channel adapters. A channel delivers one message or raises; the dispatcher handles retries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import structlog

from db.outbox import Message

log = structlog.get_logger("notify")


class Channel(Protocol):
    async def send(self, message: Message) -> None: ...


class FileChannel:
    """Appends one JSON line per message: what an SMS or e-mail gateway would have been handed."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    async def send(self, message: Message) -> None:
        line = json.dumps(
            {
                "id": message.id,
                "key": message.idempotency_key,
                "household": message.household_code,
                "kind": message.kind,
                "channel": message.channel,
                "to": message.recipient,
                "subject": message.subject,
                "body": message.body,
            },
            ensure_ascii=False,
        )
        with self._path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


class LogChannel:
    async def send(self, message: Message) -> None:
        log.info("notification", to=message.recipient, subject=message.subject, household=message.household_code)


def make_channel(name: str, path: Path) -> Channel:
    if name == "file":
        return FileChannel(path)
    if name == "log":
        return LogChannel()
    raise ValueError(f"unknown notification channel {name!r} (NOTIFY_CHANNEL: file | log)")
