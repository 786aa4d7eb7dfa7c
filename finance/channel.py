"""The payment channel: where a released payout goes (a bank or the State Treasury), as an adapter.

A channel takes an instruction, pays it at most once per end-to-end id (`payment_id`), answers status
inquiries, and calls back when it has a result. The engine treats the callback as a wake-up only and
asks `status` before recording anything; it records a final answer only when the channel signed it
(an assertion over the answer's JSON with a `channel` key registered in `signing_keys`).

`HttpBank` is the worker's channel: the adapter to a bank speaking the API of `finance/bank.py` (the
simulated bank shipped for the demo and the tests, a process of its own with a durable book). Transport
errors raise, so the activity is retried.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

import httpx
import structlog

from finance.callbacks import signed_headers
from models.assertion import ActionAssertion
from models.finance import ChannelStatus, PaymentInstruction

log = structlog.get_logger(__name__)

Outcome = tuple[str, str | None]  # ("confirmed" | "failed", reason)
Decide = Callable[[PaymentInstruction], Outcome]


class PaymentChannel(Protocol):
    name: str

    async def submit(self, instruction: PaymentInstruction) -> None: ...

    async def status(self, payment_id: str) -> ChannelStatus: ...


FAIL_REASON = "Số tài khoản không khớp tên chủ hộ (account name mismatch)"


def fail_rate_rule(rate: float, attempts: int = 1) -> Decide:
    """Fail about `rate` of first attempts (chosen by a hash of the id, so a run is repeatable); a retry
    of the same tranche is paid. `attempts` > 1 fails that many attempts of the chosen tranches."""

    def decide(instr: PaymentInstruction) -> Outcome:
        key = instr.payment_id if attempts == 1 else instr.payment_id.rsplit("-", 1)[0]  # the tranche, not the try
        h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if instr.attempt <= attempts and h < rate:
            return "failed", FAIL_REASON
        return "confirmed", None

    return decide


class InstructionConflict(ValueError):
    """The channel already holds this payment id with other terms: it will not pay it (nor pay it twice)."""


class HttpBank:
    """The channel adapter for a bank reached over HTTP (the API of finance/bank.py)."""

    name = "http-bank"

    def __init__(self, url: str, *, secret: str, callback_url: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.callback_url = callback_url or None
        self._secret = secret
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def submit(self, instruction: PaymentInstruction) -> None:
        body = json.dumps(instruction.model_dump(mode="json") | {"callback_url": self.callback_url}).encode()
        r = await self._http.post("/instructions", content=body, headers=signed_headers(self._secret, body))
        if r.status_code == 409:
            raise InstructionConflict(r.json().get("detail", r.text))
        r.raise_for_status()

    async def status(self, payment_id: str) -> ChannelStatus:
        """The bank's answer; a final one with the bank's assertion and the JSON it signed, exactly."""
        r = await self._http.get(f"/instructions/{payment_id}")
        r.raise_for_status()
        body = r.json()
        a = body.pop("assertion", None)
        return ChannelStatus.of_answer(body, ActionAssertion.model_validate(a) if a else None)

    async def statement(self) -> list[dict]:
        """Every instruction the bank holds, as it paid them (for reconciliation with the ledger)."""
        r = await self._http.get("/statement")
        r.raise_for_status()
        return r.json()["payments"]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> HttpBank:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
