"""The payment channel: where a released payout goes (a bank or the State Treasury), as an adapter.

A channel takes an instruction, pays it at most once per end-to-end id (`payment_id`), answers status
inquiries, and calls back when it has a result. The engine treats the callback as a wake-up only and
asks `status` before recording anything.

`SimulatedBank` is the channel shipped for the demo and the tests: it confirms or fails each instruction
after a delay, by a deterministic rule, and remembers what it has paid for as long as it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from models.finance import ChannelStatus, PaymentInstruction

log = structlog.get_logger(__name__)

Outcome = tuple[str, str | None]  # ("confirmed" | "failed" | "pending", reason); "pending": never answers
Decide = Callable[[PaymentInstruction], Outcome]
Notify = Callable[[PaymentInstruction], Awaitable[None]]


class PaymentChannel(Protocol):
    name: str

    async def submit(self, instruction: PaymentInstruction) -> None: ...

    async def status(self, payment_id: str) -> ChannelStatus: ...


def fail_rate_rule(rate: float) -> Decide:
    """Fail about `rate` of first attempts (chosen by a hash of the id, so a run is repeatable); a retry
    of the same tranche is paid."""

    def decide(instr: PaymentInstruction) -> Outcome:
        h = int(hashlib.sha256(instr.payment_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if instr.attempt == 1 and h < rate:
            return "failed", "Số tài khoản không khớp tên chủ hộ (account name mismatch)"
        return "confirmed", None

    return decide


class SimulatedBank:
    name = "simulated-bank"

    def __init__(self, *, delay: float = 0.5, decide: Decide | None = None, notify: Notify | None = None) -> None:
        self._delay = delay
        self._decide = decide or fail_rate_rule(0.0)
        self._notify = notify
        self._book: dict[str, ChannelStatus] = {}
        self._tasks: set[asyncio.Task] = set()
        self.submissions = 0  # instructions accepted as new (a repeated id is not a new payment)

    async def submit(self, instruction: PaymentInstruction) -> None:
        if instruction.payment_id in self._book:
            return  # the same end-to-end id: already accepted, never paid twice
        self.submissions += 1
        self._book[instruction.payment_id] = ChannelStatus(payment_id=instruction.payment_id, state="pending")
        task = asyncio.get_running_loop().create_task(self._settle(instruction))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def status(self, payment_id: str) -> ChannelStatus:
        return self._book.get(payment_id) or ChannelStatus(payment_id=payment_id, state="unknown")

    async def _settle(self, instr: PaymentInstruction) -> None:
        await asyncio.sleep(self._delay)
        state, reason = self._decide(instr)
        if state == "pending":
            return
        digest = hashlib.sha256(instr.payment_id.encode()).hexdigest()[:12].upper()
        ref = f"SIM{digest}" if state == "confirmed" else None
        self._book[instr.payment_id] = ChannelStatus(payment_id=instr.payment_id, state=state, bank_ref=ref,
                                                     reason=reason)  # fmt: skip
        log.info("payment_answered", payment_id=instr.payment_id, state=state, amount=instr.amount)
        if self._notify is None:
            return
        for attempt in range(5):
            try:
                await self._notify(instr)
                return
            except Exception as err:  # the engine also inquires on its timeout; a lost callback is not lost money
                log.warning("payment_callback_failed", payment_id=instr.payment_id, error=str(err), attempt=attempt)
                await asyncio.sleep(0.5 * (attempt + 1))
