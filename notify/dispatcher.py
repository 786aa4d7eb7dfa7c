"""Drains the outbox: claims due messages, sends each, marks it sent or schedules a retry.

Several dispatchers may run at once: claimed rows are locked and skipped by the others. Delivery is
at-least-once (a crash after sending and before commit sends again); each message carries its
idempotency key so a gateway can drop the repeat.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from core import metrics
from core.settings import Settings
from db import outbox
from db.engine import Sessions
from notify.channels import Channel

log = structlog.get_logger("notify")


BACKLOG_EVERY = 15.0  # seconds between two counts of the outbox's backlog (a scrape's usual interval)


class Dispatcher:
    def __init__(self, sessions: Sessions, channel: Channel, settings: Settings) -> None:
        self._sessions = sessions
        self._channel = channel
        self._settings = settings
        self._measured = -BACKLOG_EVERY

    async def drain_once(self) -> int:
        """Send one batch of due messages. Returns how many were sent."""
        async with self._sessions() as session, session.begin():
            batch = await outbox.claim_due(session, self._settings.notify_batch_size)
            sent: list[int] = []
            for message in batch:
                try:
                    await self._channel.send(message)
                    sent.append(message.id)
                except Exception as err:  # a channel failure of any kind is retried later
                    log.warning("notification_failed", id=message.id, error=str(err), attempts=message.attempts + 1)
                    await outbox.mark_failed(session, message, str(err), self._settings.notify_max_attempts)
            await outbox.mark_sent(session, sent)
        return len(sent)

    async def drain(self) -> int:
        """Send everything that is due now."""
        total = 0
        while n := await self.drain_once():
            total += n
        return total

    async def _measure_backlog(self) -> None:
        """The outbox's backlog as gauges, read when the dispatcher has nothing due, at most every
        BACKLOG_EVERY seconds and only when metrics are served: every message waiting (a channel that refuses
        them pushes their next attempt later, so they stay counted) and the dead."""
        now = time.monotonic()
        if not metrics.enabled() or now - self._measured < BACKLOG_EVERY:
            return
        self._measured = now
        try:
            async with self._sessions() as session:
                counts = await outbox.backlog(session)
            metrics.backlog("outbox", counts["pending"])
            metrics.backlog("outbox_dead", counts["dead"])
        except Exception:  # noqa: BLE001 (a measurement must not stop the dispatcher)
            log.warning("outbox_backlog_unmeasured", exc_info=True)

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                n = await self.drain_once()
            except Exception:
                log.exception("dispatcher_error")
                n = 0
            if n == 0:
                await self._measure_backlog()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self._settings.notify_poll_seconds)
                except TimeoutError:
                    pass
