"""The simulated bank: a process of its own with a durable book, reached over HTTP (finance/channel.HttpBank).

    python -m finance.bank --state DIR --port N --signing-keys FILE [--delay S] [--fail-rate R] [--hold]

The book is SQLite in DIR (WAL, synchronous=FULL): what the bank acknowledged survives a kill -9. Each
instruction is paid at most once per `payment_id`; the same id with other terms is refused (409). After
`--delay` seconds a background loop over the book answers each pending instruction (confirmed, or failed by
`fail_rate_rule`, or by `--fail-match` for scripted tests), and queues a callback to its `callback_url`,
signed (finance/callbacks.py), retried with growing back-off; a restart resumes both from the book.
`--hold` never answers. Only a signed instruction is accepted. A final status answer is signed with the
bank's ring (`--signing-keys`, an Ed25519 SigningRing file; its public key is registered for holder `channel`):
the engine records only an answer the bank signed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import structlog
import typer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from core.signing import STEP_TTL, SigningRing, read_ring
from finance.callbacks import signed_headers, verified
from finance.channel import fail_rate_rule
from models.assertion import digest_of
from models.finance import ANSWER_FIELDS, FINAL_STATES, ChannelStatus, PaymentInstruction, answer_step

log = structlog.get_logger("bank")

SCRIPTED_REASON = "Tài khoản bị từ chối (scripted rejection)"
TERMS = ("workflow_id", "household_code", "tranche", "attempt", "amount", "payee")

SCHEMA = """
CREATE TABLE IF NOT EXISTS instructions (
    payment_id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    household_code TEXT NOT NULL,
    tranche INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    payee TEXT NOT NULL,
    released_by TEXT NOT NULL,
    callback_url TEXT,
    state TEXT NOT NULL,
    bank_ref TEXT,
    reason TEXT,
    accepted_at REAL NOT NULL,
    answered_at REAL
);
CREATE INDEX IF NOT EXISTS instructions_pending ON instructions (accepted_at) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS callbacks (
    payment_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    delivered_at REAL,
    gave_up_at REAL,
    last_error TEXT
);
"""


class InstructionIn(PaymentInstruction):
    callback_url: str | None = None


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


class Book:
    """The bank's durable book. Every write is one committed SQLite transaction, fsynced before it returns."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def accept(self, instr: InstructionIn, now: float) -> tuple[bool, sqlite3.Row]:
        """(True, row) when new; (False, row) for the same id already in the book (nothing changes)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self.get(instr.payment_id)
            if row is None:
                self._db.execute(
                    "INSERT INTO instructions (payment_id, workflow_id, household_code, tranche, attempt, amount,"
                    " payee, released_by, callback_url, state, accepted_at) VALUES (?,?,?,?,?,?,?,?,?,'pending',?)",
                    (
                        instr.payment_id,
                        instr.workflow_id,
                        instr.household_code,
                        instr.tranche,
                        instr.attempt,
                        instr.amount,
                        instr.payee,
                        instr.released_by,
                        instr.callback_url,
                        now,
                    ),
                )
                self._db.execute("COMMIT")
                return True, self.get(instr.payment_id)
            self._db.execute("COMMIT")
            return False, row
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def get(self, payment_id: str) -> sqlite3.Row | None:
        return self._db.execute("SELECT * FROM instructions WHERE payment_id = ?", (payment_id,)).fetchone()

    def all(self) -> list[sqlite3.Row]:
        return self._db.execute("SELECT * FROM instructions ORDER BY accepted_at, payment_id").fetchall()

    def pending(self) -> list[sqlite3.Row]:
        return self._db.execute("SELECT * FROM instructions WHERE state = 'pending' ORDER BY accepted_at").fetchall()

    def answer(self, payment_id: str, state: str, bank_ref: str | None, reason: str | None, now: float) -> bool:
        """Record the answer and queue its callback, in one transaction. False if it was answered already."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute(
                "UPDATE instructions SET state = ?, bank_ref = ?, reason = ?, answered_at = ? "
                "WHERE payment_id = ? AND state = 'pending' RETURNING callback_url",
                (state, bank_ref, reason, now, payment_id),
            )
            row = cur.fetchone()
            if row is not None and row["callback_url"]:
                self._db.execute(
                    "INSERT OR IGNORE INTO callbacks (payment_id, url, body, next_at) VALUES (?, ?, ?, ?)",
                    (payment_id, row["callback_url"], json.dumps({"payment_id": payment_id}), now),
                )
            self._db.execute("COMMIT")
            return row is not None
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def due_callbacks(self) -> list[sqlite3.Row]:
        return self._db.execute(
            "SELECT * FROM callbacks WHERE delivered_at IS NULL AND gave_up_at IS NULL ORDER BY next_at"
        ).fetchall()

    def callback_done(self, payment_id: str, now: float) -> None:
        self._db.execute(
            "UPDATE callbacks SET delivered_at = ?, attempts = attempts + 1 WHERE payment_id = ?", (now, payment_id)
        )

    def callback_failed(self, payment_id: str, error: str, next_at: float | None, now: float) -> None:
        self._db.execute(
            "UPDATE callbacks SET attempts = attempts + 1, last_error = ?, next_at = COALESCE(?, next_at), "
            "gave_up_at = CASE WHEN ? IS NULL THEN ? END WHERE payment_id = ?",
            (error, next_at, next_at, now, payment_id),
        )

    def callback_of(self, payment_id: str) -> sqlite3.Row | None:
        return self._db.execute("SELECT * FROM callbacks WHERE payment_id = ?", (payment_id,)).fetchone()


def status_of(row: sqlite3.Row | None, payment_id: str) -> ChannelStatus:
    if row is None:
        return ChannelStatus(payment_id=payment_id, state="unknown")
    return ChannelStatus(
        payment_id=row["payment_id"],
        state=row["state"],
        bank_ref=row["bank_ref"],
        reason=row["reason"],
        amount=row["amount"],
        payee=row["payee"],
        tranche=row["tranche"],
        attempt=row["attempt"],
    )


def answer_of(row: sqlite3.Row | None, payment_id: str, signer: SigningRing | None, user_id: str) -> dict:
    """The status answer as JSON; a final one carries the bank's assertion over exactly this JSON (without
    the assertion), for the instruction's workflow, step `payment_<state>` and the channel's system user,
    good for a few minutes, with a fresh one-time id each time it is asked."""
    status = status_of(row, payment_id)
    answer = {k: getattr(status, k) for k in ANSWER_FIELDS}
    if row is None or status.state not in FINAL_STATES or signer is None:
        return answer
    a = signer.sign(
        workflow_id=row["workflow_id"],
        step=answer_step(status.state),
        input_digest=digest_of(answer),
        user_id=user_id,
        ttl=STEP_TTL,
    )
    return answer | {"assertion": a.model_dump(mode="json")}


def bank_ref_of(payment_id: str) -> str:
    return "SIM" + hashlib.sha256(payment_id.encode()).hexdigest()[:12].upper()


class Bank:
    """The answering and calling-back loops over the book."""

    def __init__(
        self,
        book: Book,
        *,
        delay: float,
        fail_rate: float,
        fail_attempts: int = 1,
        fail_match: tuple[str, ...] = (),
        hold: bool = False,
        secret: str = "",
        callback_attempts: int = 10,
        callback_backoff: float = 0.5,
        signer: SigningRing | None = None,
        channel_user: str = "kenh.thanhtoan",
    ) -> None:
        self.book = book
        self.signer = signer
        self.channel_user = channel_user
        self.delay = delay
        self.hold = hold
        self.secret = secret
        self.callback_attempts = callback_attempts
        self.callback_backoff = callback_backoff
        self._rule = fail_rate_rule(fail_rate, attempts=fail_attempts)
        self._fail_attempts = fail_attempts
        self._fail_match = [re.compile(p) for p in fail_match]
        self.wake = asyncio.Event()

    def decide(self, instr: PaymentInstruction) -> tuple[str, str | None]:
        if instr.attempt <= self._fail_attempts and any(p.search(instr.payment_id) for p in self._fail_match):
            return "failed", SCRIPTED_REASON
        return self._rule(instr)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            while True:
                self.wake.clear()
                try:
                    wait = await self._round(http)
                except Exception as err:  # the book is the truth: log, and go round again from it
                    log.error("bank_loop_failed", error=repr(err))
                    wait = 1.0
                if wait <= 0:
                    await asyncio.sleep(0)
                    continue
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=wait)
                except TimeoutError:
                    pass

    async def _round(self, http: httpx.AsyncClient) -> float:
        """Answer what is due, send the callbacks that are due; returns the seconds until something is."""
        now = time.time()
        wait = 1.0
        if not self.hold:
            for row in self.book.pending():
                due = row["accepted_at"] + self.delay
                if due > now:
                    wait = min(wait, due - now)
                    continue
                self._answer(row, now)
        for cb in self.book.due_callbacks():
            if cb["next_at"] > now:
                wait = min(wait, cb["next_at"] - now)
                continue
            await self._call_back(http, cb)
            wait = 0  # look again: more may have come due meanwhile
        return wait

    def _answer(self, row: sqlite3.Row, now: float) -> None:
        instr = PaymentInstruction(**{k: row[k] for k in (*TERMS, "payment_id", "released_by")})
        state, reason = self.decide(instr)
        ref = bank_ref_of(instr.payment_id) if state == "confirmed" else None
        if self.book.answer(instr.payment_id, state, ref, reason, now):
            log.info("payment_answered", payment_id=instr.payment_id, state=state, amount=instr.amount, bank_ref=ref)

    async def _call_back(self, http: httpx.AsyncClient, cb: sqlite3.Row) -> None:
        body = cb["body"].encode()
        pid = cb["payment_id"]
        try:
            r = await http.post(cb["url"], content=body, headers=signed_headers(self.secret, body))  # signed anew
            if r.is_success:
                self.book.callback_done(pid, time.time())
                log.info("callback_delivered", payment_id=pid, attempt=cb["attempts"] + 1)
                return
            error = f"HTTP {r.status_code}"
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"
        attempts = cb["attempts"] + 1
        now = time.time()
        if attempts >= self.callback_attempts:
            self.book.callback_failed(pid, error, None, now)
            log.warning("callback_given_up", payment_id=pid, attempts=attempts, error=error)
            return
        backoff = min(self.callback_backoff * 2 ** (attempts - 1), 60.0)
        self.book.callback_failed(pid, error, now + backoff, now)
        log.warning("callback_failed", payment_id=pid, attempt=attempts, error=error, retry_in=round(backoff, 3))


def row_json(row: sqlite3.Row, callback: sqlite3.Row | None = None) -> dict:
    out = {k: row[k] for k in ("payment_id", *TERMS, "state", "bank_ref", "reason")}
    out |= {"accepted_at": _iso(row["accepted_at"]), "answered_at": _iso(row["answered_at"])}
    if callback is not None:
        out |= {"callback_attempts": callback["attempts"], "callback_delivered_at": _iso(callback["delivered_at"])}
    return out


def create_app(bank: Bank) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(bank.run(), name="bank-loop")
        log.info("bank_started", delay=bank.delay, hold=bank.hold, pending=len(bank.book.pending()))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            bank.book.close()

    app = FastAPI(title="Simulated bank", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/instructions", status_code=202)
    async def submit(request: Request):
        # Only the engine may instruct a payment: anyone else could send a predictable id first, to a payee
        # of their own, and have the engine's instruction refused as a conflict.
        body = await request.body()
        if not verified(bank.secret, body, request.headers):
            log.warning("instruction_refused", reason="bad signature", client=request.client and request.client.host)
            return JSONResponse(status_code=401, content={"detail": "bad, missing or stale signature"})
        try:
            instr = InstructionIn.model_validate_json(body)
        except ValidationError as err:
            return JSONResponse(status_code=422, content={"detail": str(err)})
        new, row = bank.book.accept(instr, time.time())
        if not new:
            differs = [k for k in TERMS if row[k] != getattr(instr, k)]
            if differs:
                log.warning("instruction_conflict", payment_id=instr.payment_id, fields=differs)
                detail = (
                    f"payment {instr.payment_id} was already accepted with other terms ({', '.join(differs)} "
                    "differ): an end-to-end id is paid once, for what it first said"
                )
                return JSONResponse(status_code=409, content={"detail": detail})
        else:
            log.info("instruction_accepted", payment_id=instr.payment_id, amount=instr.amount)
            bank.wake.set()
        return {"payment_id": row["payment_id"], "state": row["state"]}

    @app.get("/instructions/{payment_id}")
    async def status(payment_id: str) -> dict:
        return answer_of(bank.book.get(payment_id), payment_id, bank.signer, bank.channel_user)

    @app.get("/statement")
    async def statement() -> dict:
        return {"payments": [row_json(r, bank.book.callback_of(r["payment_id"])) for r in bank.book.all()]}

    return app


def read_secret(secret: str | None, secret_file: Path | None) -> str:
    if secret:
        return secret
    if secret_file and secret_file.exists():
        return secret_file.read_text().strip()
    return ""


def main(
    state: Path = typer.Option(..., "--state", help="The bank's folder (its SQLite book)"),
    port: int = typer.Option(8070, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
    delay: float = typer.Option(0.5, "--delay", min=0, help="Seconds before an instruction is answered"),
    fail_rate: float = typer.Option(0.0, "--fail-rate", min=0, max=1, help="Share of first attempts failed"),
    fail_attempts: int = typer.Option(1, "--fail-attempts", min=1, help="Attempts the failures apply to"),
    fail_match: list[str] = typer.Option([], "--fail-match", help="Also fail the ids matching this regex (scripted)"),
    hold: bool = typer.Option(False, "--hold", help="Never answer (instructions stay pending)"),
    callback_secret: str = typer.Option("", "--callback-secret", envvar="PAYMENT_CALLBACK_SECRET"),
    callback_secret_file: Path | None = typer.Option(
        None, "--callback-secret-file", envvar="PAYMENT_CALLBACK_SECRET_FILE"
    ),
    callback_attempts: int = typer.Option(10, "--callback-attempts", min=1),
    callback_backoff: float = typer.Option(0.5, "--callback-backoff", min=0, help="First retry's wait, doubling"),
    signing_keys: Path | None = typer.Option(
        None, "--signing-keys", envvar="BANK_SIGNING_KEYS_FILE", help="The bank's signing ring (its answers)"
    ),
    channel_user: str = typer.Option("kenh.thanhtoan", "--channel-user", help="The system user its answers name"),
) -> None:
    import uvicorn

    from core.logs import configure_logging

    as_json = {"1": True, "true": True, "0": False, "false": False}.get(os.environ.get("LOG_JSON", "").lower())
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), as_json)
    secret = read_secret(callback_secret, callback_secret_file)
    if not secret:
        log.warning(
            "callback_secret_missing", hint="no --callback-secret: the engine's receiver refuses every callback"
        )
    signer = read_ring(signing_keys) if signing_keys else None
    if signer is None:
        log.warning("signing_keys_missing", hint="no --signing-keys: the engine records none of this bank's answers")
    bank = Bank(
        Book(state / "book.sqlite3"),
        delay=delay,
        fail_rate=fail_rate,
        fail_attempts=fail_attempts,
        fail_match=tuple(fail_match),
        hold=hold,
        secret=secret,
        callback_attempts=callback_attempts,
        callback_backoff=callback_backoff,
        signer=signer,
        channel_user=channel_user,
    )
    uvicorn.run(create_app(bank), host=host, port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    typer.run(main)
