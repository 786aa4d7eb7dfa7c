"""Chaos run: officers push a slice of the province through its steps while a nemesis kills the pieces.

    python -m bench.chaos --households 300 --officers 8 --seed 7 \\
        --worker-kills 10 --pg-kills 3 --temporal-kills 3 --bank-kills 3 [--state-dir DIR]

A stack of its own (a fresh state folder, free loopback ports, `EMBEDDED_STACK=true` so the embedded
servers run on those ports) is started with `starter.py stack up`. A seeded sample of the generated
province (bench/province.py) is imported; `--officers` officers take the households through the 12 steps
of bench/driver.py's script, deciding each next step from the household's state (a refusal that means
"already done" is success), retrying failures with a bounded backoff. The nemesis kills the worker,
PostgreSQL's postmaster, the Temporal dev server and the bank with SIGKILL, found by their pid files, each
at a seeded point of the run's progress, and restarts them with `starter.py stack up`. At the end: every
household closed, each tranche paid exactly once (bank statement × ledger × histories), every settled
household paid its entitlement, the ledger balanced, audit chains whole, `audit verify` with 0
discrepancies, and the time from the last fault until every household was closed. Method and results:
docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from auditor.history import Trail, read_trails
from auditor.records import fetch_histories
from bench.driver import MILESTONE, province_items, script
from core.client import connect
from core.errors import Refusal
from core.settings import ROOT, Settings
from core.signing import SigningRing, load_ring
from db import households, ledger
from db.engine import make_engine, make_sessions, make_url
from models.finance import TrancheStatus
from models.household import Household, Stage, Step, workflow_id_for
from models.state import HouseholdState
from operations import sample
from operations.actions import household_state, take_step
from operations.csv_list import to_csv
from operations.imports import register, start_workflows
from operations.reconciliation import reconcile
from operations.seed import seed_demo
from runtime.stack import free_port

HERE = Path(__file__).parent
KINDS = ("worker", "postgres", "temporal", "bank")
ALREADY_DONE = frozenset({"OutOfOrder", "Closed"})  # the step was taken already (or the file is closed)
PAYMENT_DELAY_SECONDS = "0.2"  # the bank's answer time in the run
STEP_TIMEOUT = 30.0  # an officer gives up waiting for one action after this, and looks again
LOOK_TIMEOUT = 15.0  # ... and for reading the household's state
BACKOFF = (0.5, 10.0)  # first and longest pause after a failure (doubling, with jitter)
DOWNTIME = (0.5, 4.0)  # seconds a killed piece stays down before `stack up`
STACK_UP_TRIES = 5
console = Console(width=None if sys.stdout.isatty() else 150)


# ------------------------------------------------------------------------------------------ processes


class Children:
    """The processes this run starts directly (`stack up`, `stack down`, the audit commands) and the zombies
    of the pieces it kills. `stack up` leaves its pieces running when it exits; this process is their
    subreaper (Linux), so a piece killed with SIGKILL is reaped here and its pid file stops answering,
    also on hosts whose init does not reap orphans."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._direct: set[int] = set()
        self.subreaper = _become_subreaper()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reap_loop, name="reaper", daemon=True)
        self._thread.start()

    def run(self, args: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
        """Run `args`; (exit status, its output). Killed after `timeout` seconds (status -9)."""
        with self._lock:
            proc = subprocess.Popen(
                args,
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            self._direct.add(proc.pid)
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            return -9, out + f"\n(killed after {timeout:.0f} s)"
        finally:
            with self._lock:
                self._direct.discard(proc.pid)

    def reap(self) -> int:
        """Reap the zombies among this process's adopted children (never one it started directly)."""
        me, n = os.getpid(), 0
        with self._lock:
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    continue
                state, ppid = stat.rsplit(")", 1)[1].split()[:2]
                if state == "Z" and int(ppid) == me and int(pid) not in self._direct:
                    with contextlib.suppress(ChildProcessError):
                        n += os.waitpid(int(pid), os.WNOHANG)[0] != 0
        return n

    def _reap_loop(self) -> None:
        while not self._stop.wait(0.3):
            self.reap()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.reap()


def _become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def alive(pid: int | None) -> bool:
    """Running, and not a zombie."""
    if not pid:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class ChaosStack:
    """The run's own stack, driven through `starter.py stack` with the run's settings."""

    state: Path
    env: dict[str, str]
    children: Children

    def pid_file(self, kind: str) -> Path:
        return {
            "worker": self.state / "worker.pid",
            "postgres": self.state / "pg" / "postmaster.pid",
            "temporal": self.state / "temporal" / "server.pid",
            "bank": self.state / "bank.pid",
        }[kind]

    def pid(self, kind: str) -> int | None:
        try:
            first = self.pid_file(kind).read_text().splitlines()[0].strip()  # the postmaster's pid is line 1
            return int(first)
        except (OSError, ValueError, IndexError):
            return None

    def pid_files(self) -> list[Path]:
        found = [self.pid_file(k) for k in KINDS] + sorted(self.state.glob("*.pid"))
        return list(dict.fromkeys(p for p in found if p.exists()))

    def starter(self, *args: str, timeout: float = 240) -> tuple[int, str]:
        return self.children.run([sys.executable, str(ROOT / "starter.py"), *args], self.env, timeout)

    def up(self) -> tuple[int, str, float]:
        started = time.monotonic()
        rc, out = self.starter("stack", "up")
        return rc, out, time.monotonic() - started

    def down(self) -> None:
        """`stack down`, then SIGKILL whatever a pid file of this state folder still names."""
        with contextlib.suppress(Exception):
            self.starter("stack", "down", timeout=120)
        for pid_file in self.pid_files():
            try:
                pid = int(pid_file.read_text().splitlines()[0].strip())
            except (OSError, ValueError, IndexError):
                continue
            if alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.children.reap()


def database_urls(host: str, port: int) -> dict[str, str]:
    """The default logins (the application's, and the schema owner's where the settings have one) on this
    host and port, so the run's PostgreSQL is set up as a developer's `stack up` sets up its own."""
    urls = {"DATABASE_URL": "database_url", "DATABASE_OWNER_URL": "database_owner_url"}
    return {
        env: make_url(Settings.model_fields[name].default).set(host=host, port=port).render_as_string(False)
        for env, name in urls.items()
        if name in Settings.model_fields
    }


def run_env(state: Path, workers: int) -> dict[str, str]:
    """Settings for the run's own stack: its state folder, free loopback ports, the embedded servers on them."""
    host = "127.0.0.1"
    ports = {k: free_port(host) for k in ("pg", "temporal", "ui", "web", "bank")}
    return {
        "STATE_DIR": str(state),
        "EMBEDDED_STACK": "true",
        **database_urls(host, ports["pg"]),
        "TEMPORAL_ADDRESS": f"{host}:{ports['temporal']}",
        "TEMPORAL_UI_URL": f"http://{host}:{ports['ui']}",
        "WEB_PORT": str(ports["web"]),
        "BANK_URL": f"http://{host}:{ports['bank']}",
        "PAYMENT_DELAY_SECONDS": PAYMENT_DELAY_SECONDS,
        "WORKER_PROCESSES": str(workers),
        "PAYLOAD_KEYS": "",  # the run's own key, created by its first `stack up` in its state folder
        "PAYLOAD_KEYS_FILE": str(state / "payload-keys"),
        "NOTIFY_FILE": str(state / "notifications.jsonl"),
    }


# ------------------------------------------------------------------------------------------- nemesis


@dataclass
class Fault:
    n: int
    kind: str
    planned_progress: float  # the share of the officers' steps done at which it is due
    downtime_s: float  # planned time down before the restart
    pid: int | None = None
    progress: float | None = None  # the share actually done when it was killed
    killed_at_s: float | None = None  # seconds since the officers began
    killed_utc: str | None = None
    restart_began_s: float | None = None
    restarted_at_s: float | None = None
    restart_s: float | None = None  # how long `stack up` took (all its tries)
    stack_up_tries: int = 0
    stack_up_rc: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.stack_up_rc == 0


def plan_faults(seed: int, counts: dict[str, int]) -> list[Fault]:
    """The faults in a seeded order, each due at a seeded share (5–85 %) of the officers' steps."""
    rng = random.Random(seed)
    kinds = [k for k in KINDS for _ in range(counts.get(k, 0))]
    rng.shuffle(kinds)
    marks = sorted(rng.uniform(0.05, 0.85) for _ in kinds)
    return [
        Fault(i + 1, kind, round(mark, 4), round(rng.uniform(*DOWNTIME), 2))
        for i, (kind, mark) in enumerate(zip(kinds, marks, strict=True))
    ]


async def nemesis(stack: ChaosStack, faults: list[Fault], progress, t0: float, deadline: float) -> None:
    """Fire each fault once the run's progress reaches its mark: SIGKILL by pid file, wait until the process
    is gone, stay down, then `stack up` (retried, bounded) and check its exit status."""
    for f in faults:
        while progress() < f.planned_progress and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter
            await asyncio.sleep(0.1)
        if time.monotonic() >= deadline:
            f.error = "not fired: the run's deadline passed"
            continue
        f.pid = stack.pid(f.kind)
        f.progress = round(progress(), 4)
        f.killed_at_s = round(time.monotonic() - t0, 2)
        f.killed_utc = datetime.now(UTC).isoformat(timespec="milliseconds")
        if not alive(f.pid):
            f.error = f"{f.kind} was not running (pid file names {f.pid})"
        else:
            try:
                os.kill(f.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError) as err:
                f.error = f"kill failed: {err}"
            gone_by = time.monotonic() + 15
            while alive(f.pid) and time.monotonic() < gone_by:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.05)
            if alive(f.pid):
                f.error = f"pid {f.pid} still alive 15 s after SIGKILL"
        console.print(
            f"[red]fault {f.n:>2}[/] t={f.killed_at_s:7.1f} s  kill -9 {f.kind:<8} pid {f.pid}  "
            f"(progress {f.progress:.0%}; down {f.downtime_s:.1f} s)"
        )
        await asyncio.sleep(f.downtime_s)
        f.restart_began_s = round(time.monotonic() - t0, 2)
        began = time.monotonic()
        for attempt in range(1, STACK_UP_TRIES + 1):
            f.stack_up_tries = attempt
            rc, out, _ = await asyncio.to_thread(stack.up)
            f.stack_up_rc = rc
            if rc == 0:
                break
            console.print(f"stack up exited {rc} (try {attempt}): {out.strip()[-300:]}", markup=False)
            await asyncio.sleep(2)
        f.restart_s = round(time.monotonic() - began, 2)
        f.restarted_at_s = round(time.monotonic() - t0, 2)
        if f.stack_up_rc != 0:
            f.error = (f.error + "; " if f.error else "") + f"stack up failed {f.stack_up_tries} times"


# ------------------------------------------------------------------------------------------ officers


@dataclass
class Officers:
    total_steps: int
    ok: int = 0  # actions the engine took
    already_done: int = 0  # refusals meaning the step had been taken (an earlier try got through)
    failures: Counter = field(default_factory=Counter)  # by kind: timeouts, transport errors, refusals
    closed_at: dict[str, float] = field(default_factory=dict)  # seconds since the officers began
    cancelled: set[str] = field(default_factory=set)
    last_seen: dict[str, str] = field(default_factory=dict)  # what each open household waits for

    def waiting_for_bank(self) -> int:
        return sum(1 for c, seen in self.last_seen.items() if c not in self.closed_at and "bank" in seen)

    def progress(self) -> float:
        return self.ok / self.total_steps if self.total_steps else 1.0


Action = tuple[Step, str, dict]


def next_action(h: Household, state: HouseholdState) -> Action | str | None:
    """What an officer does next on this household, judged from its state as the engine reports it: an
    action of bench/driver.py's script, a reason to wait (a tranche is with the bank), or None (closed)."""
    if state.stage.terminal:
        return None
    acts = script(h)

    def act(step: Step, tranche: int | None = None) -> Action:
        for s, user, kwargs in acts:
            if s is step and (tranche is None or kwargs.get("tranche") == tranche):
                return s, user, kwargs
        s, user, kwargs = next(a for a in acts if a[0] is step)  # a plan with more tranches than the script
        return s, user, {**kwargs, "tranche": tranche, "evidence": [f"{kwargs['evidence'][0][:-1]}{tranche}"]}

    first = {Stage.VERIFICATION: Step.VERIFY, Stage.APPROVAL: Step.APPROVE, Stage.FUND_ALLOCATION: Step.ALLOCATE}
    if state.stage is Stage.APPROVAL and state.posting is None:
        return act(Step.POST_LIST)
    if state.stage in first:
        return act(first[state.stage])
    tranches = sorted(state.tranches, key=lambda t: t.n)
    for t in tranches:
        if t.status is TrancheStatus.DUE:
            return act(Step.AUTHORISE_PAYOUT, t.n)
        if t.status is TrancheStatus.AUTHORISED:
            return act(Step.RELEASE_PAYOUT, t.n)
    if state.stage is Stage.CONSTRUCTION:
        milestone = MILESTONE[h.support_type.value]
        if any(t.milestone.value == milestone and t.status is TrancheStatus.PLANNED for t in tranches):
            return act(Step.REPORT_PROGRESS)
        return act(Step.COMPLETE_CONSTRUCTION)
    if state.stage is Stage.ACCEPTANCE:
        return act(Step.ACCEPT)
    waiting = [t.n for t in tranches if t.status is not TrancheStatus.PAID]
    if not waiting:
        return act(Step.SETTLE)
    return f"tranche {waiting[0]} {tranches[waiting[0] - 1].status.value}: waiting for the bank"


async def run_officers(
    client,
    sessions,
    items: list[Household],
    k: int,
    seed: int,
    figures: Officers,
    t0: float,
    deadline: float,
    signer: SigningRing,
) -> None:
    """`k` officers share the households: each takes one, acts until it must wait (for the bank) or an
    action fails, then puts it back with a pause (longer after each failure in a row) and takes the next."""
    queue: asyncio.PriorityQueue = asyncio.PriorityQueue()
    for i, h in enumerate(items):
        queue.put_nowait((0.0, i, h))
    fails: dict[str, int] = defaultdict(int)
    open_codes = {h.code for h in items}

    def close(h: Household, stage: Stage) -> None:
        open_codes.discard(h.code)
        if stage is Stage.CANCELLED:
            figures.cancelled.add(h.code)
        figures.closed_at[h.code] = round(time.monotonic() - t0, 2)
        figures.last_seen[h.code] = stage.value

    async def look_and_act(h: Household, rng: random.Random) -> float | None:
        """Work the household until it waits; None when closed, else the pause before the next look."""
        taken_already: Action | None = None  # the action last refused as "already done"
        for _ in range(30):
            try:
                state = await asyncio.wait_for(household_state(client, h.code), LOOK_TIMEOUT)
            except Exception as err:  # a person tries again later, whatever went wrong
                return failed(h, "look", err, rng)
            action = next_action(h, state)
            if action is None:
                close(h, state.stage)
                return None
            if isinstance(action, str):
                figures.last_seen[h.code] = action
                return 0.3
            step, user, kwargs = action
            figures.last_seen[h.code] = f"{state.stage.value}: {step.value}"
            if action == taken_already:
                # Refused as done, yet the state still asks for it (a workflow that failed answers "Closed"
                # while its last state is open): not done after all; a failure, tried again later.
                return failed(h, f"refused {step.value} as done, still due", RuntimeError(state.stage.value), rng)
            try:
                await asyncio.wait_for(
                    take_step(client, sessions, h.code, step, user, signer=signer, **kwargs), STEP_TIMEOUT
                )
            except Refusal as r:
                if r.rule in ALREADY_DONE:
                    figures.already_done += 1
                    taken_already = action
                    continue  # taken already: read the state again to see what is next
                return failed(h, f"refused {r.rule}", r, rng)
            except Exception as err:
                return failed(h, step.value, err, rng)
            figures.ok += 1
            fails[h.code] = 0
            if step is Step.SETTLE:
                close(h, Stage.CLOSED)
                return None
        return 0.0

    def failed(h: Household, what: str, err: BaseException, rng: random.Random) -> float:
        label = what if isinstance(err, Refusal) else f"{what}: {type(err).__name__}"
        figures.failures[label] += 1
        figures.last_seen[h.code] = f"after a failure ({label}: {str(err)[:120]})"
        fails[h.code] += 1
        base = min(BACKOFF[1], BACKOFF[0] * 2 ** (fails[h.code] - 1))
        return base * rng.uniform(0.5, 1.0)

    async def officer(no: int) -> None:
        rng = random.Random(seed * 1000 + no)
        while open_codes and time.monotonic() < deadline:
            try:
                not_before, i, h = queue.get_nowait()
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.1)  # the rest are in other officers' hands
                continue
            wait = not_before - time.monotonic()
            if wait > 0:
                queue.put_nowait((not_before, i, h))
                await asyncio.sleep(min(wait, 0.2))
                continue
            pause = await look_and_act(h, rng)
            if pause is not None:
                queue.put_nowait((time.monotonic() + pause, i, h))

    await asyncio.gather(*(officer(n) for n in range(k)))


# -------------------------------------------------------------------------------------------- checks


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP
    figures: str
    detail: Any = None


def bank_statement(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/statement", timeout=30) as answer:  # loopback only
        return json.loads(answer.read())["payments"]


async def read_history(client, codes: list[str]) -> dict[str, Trail]:
    trails = await read_trails(fetch_histories(client, [workflow_id_for(c) for c in codes]), client.data_converter)
    return {t.household_code: t for t in trails}


def confirmations(trail: Trail) -> dict[int, list[dict]]:
    """The channel's confirmations a history recorded, by tranche: payment id, bank reference, amount."""
    out: dict[int, list[dict]] = defaultdict(list)
    for tr in trail.transitions:
        if tr.recorded and tr.record.step is Step.PAYMENT_CONFIRMED:
            out[tr.record.tranche or 0].append(
                {"payment_id": tr.record.payment_id, "amount": tr.amount, "bank_ref": (tr.record.evidence or [None])[0]}
            )
    return out


async def run_checks(
    stack: ChaosStack,
    settings: Settings,
    client,
    sessions,
    items: list[Household],
    figures: Officers,
    faults: list[Fault],
    bank_present: bool,
    asked: dict[str, int],
    t_closed: float | None,
) -> tuple[list[Check], dict]:
    codes = sorted(h.code for h in items)
    wanted = set(codes)
    checks: list[Check] = []
    trails = await read_history(client, codes)
    async with sessions() as s:
        rm = {r.code: r for r in await households.rows_of(s, codes)}
        tranches = defaultdict(dict)
        for r in await households.tranche_rows_of(s, codes):
            tranches[r.household_code][r.tranche] = r
        posted: dict[tuple[str, int], int] = defaultdict(int)
        posted_n: dict[tuple[str, int], int] = defaultdict(int)
        for r in await ledger.posted_pieces(s):
            if r.household_code in wanted:
                posted[(r.household_code, r.tranche)] += r.amount
                posted_n[(r.household_code, r.tranche)] += 1
        rec = await reconcile(s)

    # 1. every household closed: Temporal (the workflow completed), its history (last step to closed), read model
    completed = {c for c, tr in trails.items() if tr.status == "completed"}
    hist_closed = {
        c for c, tr in trails.items() if tr.transitions and tr.transitions[-1].record.to_stage is Stage.CLOSED
    }
    rm_closed = {c for c, r in rm.items() if r.stage == "closed"}
    closed = completed & hist_closed & rm_closed
    stuck = {
        c: {
            "stage": rm[c].stage if c in rm else None,
            "workflow": trails[c].status if c in trails else None,
            "last_seen": figures.last_seen.get(c),
        }
        for c in codes
        if c not in closed
    }
    checks.append(
        Check(
            "every household closed",
            "PASS" if len(closed) == len(codes) else "FAIL",
            f"{len(closed)}/{len(codes)} (Temporal completed {len(completed)}, history {len(hist_closed)}, "
            f"read model {len(rm_closed)})",
            {"stuck": stuck},
        )
    )

    # 2. each tranche paid exactly once: the histories' confirmations × the ledger's posted pieces (× the bank)
    problems: list[str] = []
    n_tranches = 0
    history_confirmed: dict[tuple[str, int], dict] = {}
    for c in codes:
        conf = confirmations(trails[c]) if c in trails else {}
        for n, row in sorted(tranches[c].items()):
            n_tranches += 1
            got = conf.get(n, [])
            if len(got) != 1:
                problems.append(f"{c} T{n}: {len(got)} confirmations in the history")
            else:
                history_confirmed[(c, n)] = got[0]
                if got[0]["amount"] != row.amount:
                    problems.append(f"{c} T{n}: history amount {got[0]['amount']}, tranche {row.amount}")
            if posted[(c, n)] != row.amount:
                problems.append(f"{c} T{n}: ledger posted {posted[(c, n)]:,} of {row.amount:,}")
    checks.append(
        Check(
            "each tranche paid exactly once: histories × ledger",
            "FAIL" if problems else "PASS",
            f"{n_tranches} tranches, {len(history_confirmed)} confirmed once in the histories, "
            f"{sum(posted_n.values())} ledger pieces posted",
            problems[:50],
        )
    )
    if not bank_present:
        checks.append(
            Check(
                "each tranche paid exactly once by the bank (statement)",
                "SKIP",
                "bank piece not present: no separate bank process (finance/bank.py) in this build",
            )
        )
    else:
        bank_problems: list[str] = []
        try:
            statement = await asyncio.to_thread(bank_statement, settings_bank_url(settings))
        except Exception as err:
            statement, bank_problems = [], [f"statement unreadable: {err}"]
        paid = defaultdict(list)
        for p in statement:
            if p.get("household_code") in wanted and p.get("state") == "confirmed":
                paid[(p["household_code"], int(p["tranche"]))].append(p)
        for c in codes:
            for n, row in sorted(tranches[c].items()):
                got = paid.get((c, n), [])
                if len(got) != 1:
                    bank_problems.append(f"{c} T{n}: the bank paid {len(got)} times")
                    continue
                p, h = got[0], history_confirmed.get((c, n))
                if p["amount"] != row.amount:
                    bank_problems.append(f"{c} T{n}: the bank paid {p['amount']:,}, tranche {row.amount:,}")
                if h and (p["payment_id"] != h["payment_id"] or (p.get("bank_ref") and p["bank_ref"] != h["bank_ref"])):
                    bank_problems.append(
                        f"{c} T{n}: bank {p['payment_id']}/{p.get('bank_ref')}, history "
                        f"{h['payment_id']}/{h['bank_ref']}"
                    )
        checks.append(
            Check(
                "each tranche paid exactly once by the bank (statement × ledger × histories)",
                "FAIL" if bank_problems else "PASS",
                f"{len(statement)} instructions on the statement, "
                f"{sum(len(v) for v in paid.values())} confirmed for {n_tranches} tranches",
                bank_problems[:50],
            )
        )

    # 3. every settled household paid exactly its entitlement: history = ledger = read model = entitlement
    wrong = []
    for c in sorted(closed):
        hist = sum(x[0]["amount"] or 0 for x in confirmations(trails[c]).values() if x)
        ledger_paid = sum(v for (code, _), v in posted.items() if code == c)
        r = rm[c]
        if not (hist == ledger_paid == r.paid == r.entitlement == sum(x.amount for x in tranches[c].values())):
            wrong.append(
                f"{c}: entitlement {r.entitlement:,}, read model {r.paid:,}, ledger {ledger_paid:,}, history {hist:,}"
            )
    total = sum(rm[c].entitlement for c in closed)
    checks.append(
        Check(
            "every settled household paid exactly its entitlement",
            "FAIL" if wrong or not closed else "PASS",
            f"{len(closed) - len(wrong)}/{len(closed)} settled households, {total:,} đồng",
            wrong[:50],
        )
    )

    # 4. ledger balanced (the reconciliation's four-way check and the ledger's own invariants)
    checks.append(
        Check(
            "ledger balanced",
            "FAIL" if rec.problems else "PASS",
            f"{len(rec.problems)} problems over {len(rec.sources)} sources",
            rec.problems[:50],
        )
    )

    # 5. audit chains whole, 6. audit verify: the project's own commands, as an auditor runs them
    rc, out = await asyncio.to_thread(stack.starter, "audit", "chain")
    checks.append(
        Check(
            "audit chains whole (audit chain)",
            "PASS" if rc == 0 else "FAIL",
            out.strip().splitlines()[-1] if out.strip() else f"exit {rc}",
        )
    )
    rc, out = await asyncio.to_thread(stack.starter, "audit", "verify", "--json", timeout=1200)
    try:
        report = json.loads(out[out.index("{") :])
    except ValueError:
        report = {"ok": False, "discrepancies": [out[-500:]], "households": 0, "by_kind": {}}
    n_disc = len(report.get("discrepancies", []))
    checks.append(
        Check(
            "audit verify: 0 discrepancies",
            "PASS" if rc == 0 and n_disc == 0 else "FAIL",
            f"{n_disc} discrepancies over {report.get('households')} households, "
            f"{report.get('transitions')} steps, {report.get('audit_rows')} audit rows, "
            f"{report.get('transfers')} transfers",
            {"by_kind": report.get("by_kind"), "first": report.get("discrepancies", [])[:20]},
        )
    )

    # 7. the faults: as many of each kind as asked, each killed and restarted (stack up exit 0)
    done = Counter(f.kind for f in faults if f.ok)
    want = {k: v for k, v in asked.items() if bank_present or k != "bank"}
    fault_ok = all(done[k] >= v for k, v in want.items()) and all(f.ok for f in faults)
    text = ", ".join(f"{k} {done[k]}/{v}" for k, v in want.items())
    if not bank_present and asked.get("bank"):
        text += f"; bank 0/{asked['bank']}: bank piece not present"
    checks.append(
        Check(
            "faults injected and recovered (kill -9, stack up exit 0)",
            "PASS" if fault_ok else "FAIL",
            text,
            [asdict(f) for f in faults if not f.ok],
        )
    )

    # 8. recovery: from the last fault (its restart done) until every household was closed
    last = max((f.restarted_at_s for f in faults if f.restarted_at_s is not None), default=None)
    last_kill = max((f.killed_at_s for f in faults if f.killed_at_s is not None), default=None)
    recovery = round(max(0.0, t_closed - last), 1) if t_closed is not None and last is not None else None
    checks.append(
        Check(
            "time from the last fault until every household closed",
            "PASS" if recovery is not None and len(closed) == len(codes) else "FAIL",
            f"{recovery} s after the last restart ({round(t_closed - last_kill, 1)} s after its kill)"
            if recovery is not None and last_kill is not None
            else "not every household closed",
        )
    )
    figures_out = {
        "closed": len(closed),
        "tranches": n_tranches,
        "paid_dong": total,
        "recovery_s": recovery,
        "last_fault_restarted_s": last,
        "last_fault_killed_s": last_kill,
        "all_closed_s": t_closed,
        "audit_verify": {
            k: report.get(k) for k in ("households", "transitions", "audit_rows", "transfers", "amount_checked")
        },
    }
    return checks, figures_out


def settings_bank_url(settings: Settings) -> str:
    return getattr(settings, "bank_url", None) or os.environ.get("BANK_URL", "http://127.0.0.1:8070")


# ---------------------------------------------------------------------------------------------- main


def code_version(stack: ChaosStack) -> dict[str, Any]:
    """The commit the run's code is at, and whether the working tree had changes on top of it."""
    rc, head = stack.children.run(["git", "rev-parse", "--short", "HEAD"], stack.env, timeout=30)
    if rc != 0:
        return {"commit": None, "uncommitted_changes": None}
    _, changes = stack.children.run(["git", "status", "--porcelain", "--untracked-files=no"], stack.env, timeout=30)
    return {"commit": head.strip(), "uncommitted_changes": bool(changes.strip())}


def sample_slice(n: int, seed: int, province_seed: int) -> list[Household]:
    everyone = province_items(province_seed, 6508, "")
    picked = sorted(random.Random(seed).sample(range(len(everyone)), min(n, len(everyone))))
    return [everyone[i] for i in picked]


async def chaos(args: argparse.Namespace, stack: ChaosStack, started_utc: str) -> int:
    counts = {
        "worker": args.worker_kills,
        "postgres": args.pg_kills,
        "temporal": args.temporal_kills,
        "bank": args.bank_kills,
    }
    rc, out, secs = await asyncio.to_thread(stack.up)
    console.print(out.rstrip(), markup=False, highlight=False)
    if rc != 0:
        console.print(f"[bold red]stack up exited {rc}[/]")
        return 2
    bank_present = (ROOT / "finance" / "bank.py").exists() and alive(stack.pid("bank"))
    if not bank_present:
        console.print(
            "[yellow]bank piece not present[/] (no bank process started by stack up): bank kills and "
            "the bank statement check are skipped"
        )
    settings = Settings()
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    try:
        await seed_demo(sessions)
        items = sample_slice(args.households, args.seed, args.province_seed)
        async with sessions() as s, s.begin():
            await ledger.receive(
                s,
                key="chaos:budget",
                source="NS-TINH",
                amount=len(items) * 100_000_000,
                memo="chaos run: the slice's budget",
            )
        client = await connect(settings)
        _, registered, policy = await register(sessions, to_csv(items), "chaos.csv", sample.PROVINCE_USER)
        await start_workflows(client, settings.temporal_task_queue, registered, policy)
        new_builds = sum(h.support_type.value == "new_build" for h in registered)
        console.print(
            f"imported {len(registered)} households ({new_builds} new builds); {args.officers} officers; "
            f"seed {args.seed}"
        )
        faults = plan_faults(args.seed, {k: v for k, v in counts.items() if bank_present or k != "bank"})
        figures = Officers(total_steps=len(registered) * len(script(registered[0])))
        t0 = time.monotonic()
        deadline = t0 + args.timeout
        work = asyncio.create_task(
            run_officers(
                client, sessions, registered, args.officers, args.seed, figures, t0, deadline, load_ring(settings)
            )
        )
        nem = asyncio.create_task(nemesis(stack, faults, figures.progress, t0, deadline))
        last_report = 0.0
        while not work.done():
            await asyncio.sleep(1)
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                console.print(
                    f"  t={time.monotonic() - t0:7.1f} s  steps {figures.ok}/{figures.total_steps}  "
                    f"closed {len(figures.closed_at)}/{len(registered)}  failures {sum(figures.failures.values())}  "
                    f"waiting for the bank {figures.waiting_for_bank()}"
                )
        await work
        all_closed = len(figures.closed_at) == len(registered) and not figures.cancelled
        t_closed = max(figures.closed_at.values()) if all_closed else None
        if not nem.done():
            console.print("the officers are done; the faults not yet fired are fired now")
        await nem
        wall = round(time.monotonic() - t0, 1)
        console.print(
            f"officers done in {wall} s: {figures.ok} steps, {figures.already_done} already done, "
            f"{sum(figures.failures.values())} failures retried"
        )
        if not all_closed:
            console.print(
                f"[red]not closed within {args.timeout:.0f} s:[/] {len(registered) - len(figures.closed_at)} households"
            )
        checks, figs = await run_checks(
            stack, settings, client, sessions, registered, figures, faults, bank_present, counts, t_closed
        )
    finally:
        await engine.dispose()
    table = Table("check", "result", "figures", title=f"Chaos run: {len(registered)} households, seed {args.seed}")
    colour = {"PASS": "green", "FAIL": "bold red", "SKIP": "yellow"}
    for c in checks:
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.figures)
    console.print(table)
    for c in checks:
        if c.status == "FAIL" and c.detail:
            console.print(f"[red]{c.name}[/]: {json.dumps(c.detail, ensure_ascii=False, default=str)[:1500]}")
    record = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "started_at": started_utc,
        "method": "bench/chaos.py; docs/RELIABILITY.md",
        "args": {
            "households": args.households,
            "officers": args.officers,
            "seed": args.seed,
            "province_seed": args.province_seed,
            "timeout_s": args.timeout,
            "worker_processes": args.workers,
            "kills": counts,
            "payment_delay_s": float(PAYMENT_DELAY_SECONDS),
        },
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.system(),
            "subreaper": stack.children.subreaper,
        },
        "code": code_version(stack),
        "bank_present": bank_present,
        "faults": [asdict(f) for f in faults],
        "officers": {
            "steps": figures.ok,
            "already_done": figures.already_done,
            "wall_s": wall,
            "failures": dict(figures.failures.most_common()),
        },
        "figures": figs,
        "checks": [asdict(c) for c in checks],
        "passed": not any(c.status == "FAIL" for c in checks),
    }
    out_file = args.out or HERE / "results" / f"chaos-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=str) + "\n")
    console.print(f"written to {out_file.name if args.out is None else out_file}")
    return 0 if record["passed"] else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--households", type=int, default=300)
    ap.add_argument("--officers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--province-seed", type=int, default=2025, help="bench/province.py's seed")
    ap.add_argument("--worker-kills", type=int, default=10)
    ap.add_argument("--pg-kills", type=int, default=3)
    ap.add_argument("--temporal-kills", type=int, default=3)
    ap.add_argument("--bank-kills", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="WORKER_PROCESSES of the run's stack")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds until every household must be closed")
    ap.add_argument("--state-dir", type=Path, default=None, help="a new or empty folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="the result file (default: bench/results/chaos-*.json)")
    args = ap.parse_args()
    if args.state_dir is None:
        state = Path(tempfile.mkdtemp(prefix="chaos-"))
    else:
        state = args.state_dir.resolve()
        if state.exists() and any(state.iterdir()):
            sys.exit(f"--state-dir {state} is not empty: a chaos run starts from a fresh state folder")
        state.mkdir(parents=True, exist_ok=True)
    env = run_env(state, args.workers)
    os.environ.update(env)  # this process's own Settings see the run's stack, as its children do
    (state / "chaos-env.json").write_text(json.dumps(env, indent=1) + "\n")
    console.print(f"state folder {state}")
    stack = ChaosStack(state, dict(os.environ), Children())
    started_utc = datetime.now(UTC).isoformat(timespec="seconds")
    code = 3

    def stop(signum: int) -> None:
        # Stopped from outside (SIGTERM, Ctrl-C): stop the run's stack now, whatever the tasks are doing.
        console.print(f"[red]signal {signum}: stopping the run's stack[/]")
        stack.down()
        stack.children.close()
        os._exit(128 + signum)

    async def go() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        return await chaos(args, stack, started_utc)

    try:
        code = asyncio.run(go())
    finally:
        console.print("stopping the run's stack")
        stack.down()
        stack.children.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
