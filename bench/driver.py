"""Push households through all six stages as officers would, and the bare baseline on the same servers.

    python starter.py stack up                     # a fresh STATE_DIR for a clean run
    python -m bench.driver --households 6508 --officers 20

Ours: every household of the generated province (bench/province.py) is imported, then taken through its
13 recorded steps — verify, approve, allocate, report progress, authorise and release tranche 1, complete,
accept, authorise and release tranche 2, settle, plus the channel's two confirmations — by `--officers`
concurrent officers, each action an update round trip through the engine (user looked up, validator,
activity, PostgreSQL transaction). The baseline: as many bare workflows, each taking the same Temporal
calls as a household (12 updates, 18 activities that do nothing, 2 signals; bench/baseline.py), with the
same concurrency, on a worker process of its own. Reported for both: households/s, transitions/s,
p50/p95/p99 of an action, CPU of the worker, of Temporal and of PostgreSQL; and the ratio ours / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import Client

from bench.baseline import RELEASES, SIGNALS, UPDATES, BaselineWorkflow
from bench.province import lang_son
from core.client import connect
from core.formatting import today
from core.settings import ROOT, Settings, get_settings
from core.signing import SigningRing, load_ring
from db import ledger
from db.engine import Sessions, make_engine, make_sessions
from models.finance import TrancheStatus
from models.household import Household, Step
from operations import sample
from operations.actions import household_state, take_step
from operations.csv_list import to_csv
from operations.imports import register, start_workflows
from operations.seed import seed_demo

HERE = Path(__file__).parent
STEPS_PER_HOUSEHOLD = UPDATES + SIGNALS  # 12 officers' updates + the channel's 2 confirmations
MILESTONE = {"new_build": "foundation", "repair": "progress_30"}
# Processes whose CPU is reported, by what their command line contains.
PROCESSES = (
    ("postgres", ("postgres",)),
    ("temporal", ("temporal", "server")),
    ("worker", ("worker.py",)),
    ("baseline worker", ("bench.baseline",)),
)


@dataclass
class Figures:
    label: str
    households: int = 0
    transitions: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    def pct(self, p: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else 0.0

    @property
    def per_second(self) -> float:
        return self.households / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {
            "label": self.label,
            "households": self.households,
            "transitions": self.transitions,
            "seconds": round(self.seconds, 1),
            "households_per_s": round(self.per_second, 2),
            "transitions_per_s": round(self.transitions / self.seconds, 1) if self.seconds else 0,
            "p50_ms": round(self.pct(50), 1),
            "p95_ms": round(self.pct(95), 1),
            "p99_ms": round(self.pct(99), 1),
            "cpu_s": {k: round(v, 1) for k, v in self.cpu.items()},
        }


def script(h: Household) -> list[tuple[Step, str, dict]]:
    """The officers' 12 actions on one household, in order; the channel confirms each release. The list was
    posted `sample.POSTED_DAYS_AGO` days before (the benchmark runs on the wall clock of a dev server)."""
    commune, district = sample.officers_of(h.district, h.commune)
    finance, settles = sample.FINANCE_USERS
    posted = today() - timedelta(days=sample.POSTED_DAYS_AGO)
    return [
        (Step.VERIFY, commune, {"evidence": [f"BB/{h.code}"], "details": {"findings": sample.findings_for(h)}}),
        (Step.POST_LIST, commune, {"evidence": [f"NY/{h.code}"], "details": sample.posting_for(h, posted)}),
        (Step.APPROVE, district, {"evidence": [h.decision_ref]}),
        (Step.ALLOCATE, finance, {"evidence": [f"PB/{h.code}"]}),
        (Step.REPORT_PROGRESS, commune, {"milestone": MILESTONE[h.support_type.value], "evidence": ["TD"]}),
        (Step.AUTHORISE_PAYOUT, finance, {"tranche": 1, "evidence": ["DC1"]}),
        (Step.RELEASE_PAYOUT, sample.TREASURY_USER, {"tranche": 1, "evidence": ["UNC1"]}),
        (Step.COMPLETE_CONSTRUCTION, commune, {"evidence": ["HT"]}),
        (Step.ACCEPT, district, {"evidence": ["NT", "SD"]}),
        (Step.AUTHORISE_PAYOUT, finance, {"tranche": 2, "evidence": ["DC2"]}),
        (Step.RELEASE_PAYOUT, sample.TREASURY_USER, {"tranche": 2, "evidence": ["UNC2"]}),
        (Step.SETTLE, settles, {"evidence": ["QT"]}),
    ]


async def _until(read: Callable, done: Callable[[object], bool], what: str, within: float = 120.0) -> None:
    """Poll `read()` every 50 ms until `done(value)`: the settling officer checks the household is paid."""
    deadline = time.monotonic() + within
    while not done(await read()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not paid after {within:.0f} s")
        await asyncio.sleep(0.05)


async def _paid(client: Client, code: str) -> None:
    """Wait until the workflow itself shows every tranche paid: settlement is judged on its state (the read
    model is written a moment before the workflow applies the channel's answer)."""
    await _until(
        lambda: household_state(client, code),
        lambda s: bool(s.tranches) and all(t.status is TrancheStatus.PAID for t in s.tranches),
        f"household {code}",
    )


async def _officers(label: str, n: int, work: list, one: Callable, advance: Callable[[], None]) -> Figures:
    """`n` officers take the items of `work` one after another; `one(item, latencies)` does an item's
    steps and appends each action's round trip in ms."""
    figures = Figures(label)
    queue: asyncio.Queue = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)

    async def officer() -> None:
        while not queue.empty():
            await one(queue.get_nowait(), figures.latencies_ms)
            figures.households += 1
            figures.transitions += STEPS_PER_HOUSEHOLD
            advance()

    started = time.perf_counter()
    await asyncio.gather(*(officer() for _ in range(n)))
    figures.seconds = time.perf_counter() - started
    return figures


def thinker(think: float, seed: int = 0) -> Callable[[], Awaitable[None]]:
    """An officer's pause before each action: exponential with mean `think` seconds (none when 0), drawn
    from a seeded generator so a run can be repeated."""
    rng = random.Random(seed)

    async def pause() -> None:
        if think:
            await asyncio.sleep(rng.expovariate(1 / think))

    return pause


async def run_ours(
    client: Client,
    sessions: Sessions,
    task_queue: str,
    items: list[Household],
    officers: int,
    advance: Callable[[], None] = lambda: None,
    think: float = 0.0,
    *,
    signer: SigningRing,
) -> Figures:
    """Import `items`, start their workflows, then take every household through all its steps (with a
    pause of `think` seconds on average before each action; none for the throughput run)."""
    pause = thinker(think)
    _, registered, policy = await register(sessions, to_csv(items), "bench.csv", sample.PROVINCE_USER)
    await start_workflows(client, task_queue, registered, policy)

    async def household(h: Household, latencies: list[float]) -> None:
        for step, user, kwargs in script(h):
            if step is Step.SETTLE:
                await _paid(client, h.code)
            await pause()
            started = time.perf_counter()
            await take_step(client, sessions, h.code, step, user, signer=signer, **kwargs)
            latencies.append((time.perf_counter() - started) * 1000)

    return await _officers("ours", officers, registered, household, advance)


async def run_baseline(
    client: Client,
    task_queue: str,
    n: int,
    officers: int,
    advance: Callable[[], None] = lambda: None,
    prefix: str | None = None,
    think: float = 0.0,
    local: bool = False,
) -> Figures:
    """The floor: `n` bare workflows taking the same Temporal calls as a household, by the same officers. The
    channel's confirmation after each release is a signal sent from here; the settling update waits, as
    ours does, until the workflow shows both confirmations applied. With `local`, its 15 activities are
    local activities, as ours are."""
    pause = thinker(think)
    prefix = prefix or f"baseline-{uuid.uuid4().hex[:8]}"
    handles = [
        await client.start_workflow(BaselineWorkflow.run, local, id=f"{prefix}-{i}", task_queue=task_queue)
        for i in range(n)
    ]

    async def one(handle, latencies: list[float]) -> None:
        for k in range(UPDATES):
            if k == UPDATES - 1:
                await _until(lambda: handle.query(BaselineWorkflow.confirmed), lambda c: c >= SIGNALS, handle.id)
            await pause()
            started = time.perf_counter()
            await handle.execute_update(BaselineWorkflow.step, k)
            latencies.append((time.perf_counter() - started) * 1000)
            if k in RELEASES:
                await handle.signal(BaselineWorkflow.confirm)

    return await _officers("baseline", officers, handles, one, advance)


def _labelled_processes():
    """(label, /proc/<pid>/stat text) of every process `PROCESSES` names."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = next((label for label, marks in PROCESSES if all(m in cmd for m in marks)), None)
        if name:
            yield name, stat


def count_processes(label: str) -> int:
    return sum(1 for name, _ in _labelled_processes() if name == label)


def cpu_by_process() -> dict[str, float]:
    """CPU seconds (user + system) so far of the processes that matter, by name: PostgreSQL, Temporal and
    the Python workers (ours and the baseline's), read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for name, stat in _labelled_processes():
        fields = stat.rsplit(")", 1)[1].split()
        # utime + stime, plus cutime + cstime: PostgreSQL's backends come and go, and the postmaster
        # keeps the CPU of those that have ended.
        totals[name] = totals.get(name, 0.0) + sum(int(x) for x in fields[11:15]) / tick
    return totals


def cpu_now() -> dict[str, float]:
    """`cpu_by_process()` and the driver's own CPU (its officers are part of the system measured)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return cpu_by_process() | {"driver": r.ru_utime + r.ru_stime}


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


def province_items(seed: int, n: int, run: str) -> list[Household]:
    """The first `n` households of the generated province under codes and CCCDs of this run's own, so a
    second run on the same database registers new households (one salt added to the last six digits of
    every CCCD keeps them unique within the run)."""
    salt = int(hashlib.sha256(run.encode()).hexdigest()[:5], 16)
    return [
        Household(
            **(
                r
                | {
                    "code": f"{run}{r['code']}",
                    "programme": "",
                    "cccd": f"{r['cccd'][:6]}{(int(r['cccd'][6:]) + salt) % 10**6:06d}",
                }
            )
        )
        for r in lang_son(seed).all[:n]
    ]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--households", type=int, default=6508)
    ap.add_argument("--officers", type=int, default=20)
    ap.add_argument("--paced", type=int, default=200, help="households in the latency pass (0: none)")
    ap.add_argument("--think", type=float, default=2.0, help="officers' mean pause in the latency pass, s")
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument(
        "--baseline-local", action="store_true", help="the baseline's 15 activities as local activities, as ours are"
    )
    ap.add_argument(
        "--baseline-workers",
        type=int,
        default=None,
        help="worker processes for the baseline (default: as many as ours, counted when the run starts)",
    )
    args = ap.parse_args()
    settings: Settings = get_settings()
    console = Console()
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    await seed_demo(sessions)
    async with sessions() as s, s.begin():
        await ledger.receive(
            s,
            key="bench:province-budget",
            source="NS-TINH",
            amount=400_000_000_000,
            memo="benchmark: the province's whole budget",
        )
    run = uuid.uuid4().hex[:4].upper()
    client = await connect(settings)
    bare = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    baseline_queue = f"baseline-{run}"
    # The floor gets as many worker processes as ours has, so a second process of ours is not compared
    # with a floor held to one core's worth of Python.
    ours_workers = count_processes("worker")
    baseline_workers = args.baseline_workers or max(ours_workers, 1)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.baseline", baseline_queue, cwd=ROOT, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(baseline_workers)
    ]
    for proc in procs:
        assert proc.stdout and (await proc.stdout.readline()).strip() == b"ready"
    # Throughput: officers act back to back, the machine saturated. Latency: the same officers at a
    # human pace (a pause before each action), as a working day looks.
    phases = [("ours", province_items(args.seed, args.households, f"B{run}"), 0.0), ("baseline", args.households, 0.0)]
    if args.paced:
        phases += [
            ("ours paced", province_items(args.seed, args.paced, f"P{run}"), args.think),
            ("baseline paced", args.paced, args.think),
        ]
    results: dict[str, Figures] = {}
    try:
        for label, work, think in phases:
            total = len(work) if isinstance(work, list) else work
            with Progress(
                TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
            ) as bar:
                task = bar.add_task("", total=total)
                before = cpu_now()
                if label.startswith("ours"):
                    figures = await run_ours(
                        client,
                        sessions,
                        settings.temporal_task_queue,
                        work,
                        args.officers,
                        lambda t=task: bar.advance(t),
                        think=think,
                        signer=load_ring(settings),
                    )
                else:
                    figures = await run_baseline(
                        bare,
                        baseline_queue,
                        work,
                        args.officers,
                        lambda t=task: bar.advance(t),
                        think=think,
                        local=args.baseline_local,
                    )
                figures.cpu = _delta(cpu_now(), before)
                figures.label = label
            results[label] = figures
    finally:
        for proc in procs:
            proc.terminate()
            await proc.wait()
        await engine.dispose()
    ours, base = results["ours"], results["baseline"]
    table = Table("figure", "ours", "baseline", "ratio ours / baseline", title="Driver")
    rows = [
        ("households/s", ours.per_second, base.per_second),
        ("transitions/s", ours.transitions / ours.seconds, base.transitions / base.seconds),
        ("action p50 ms", ours.pct(50), base.pct(50)),
        ("action p95 ms", ours.pct(95), base.pct(95)),
        ("action p99 ms", ours.pct(99), base.pct(99)),
    ]
    if args.paced:
        po, pb = results["ours paced"], results["baseline paced"]
        rows += [(f"paced ({args.think:g} s pause) p{p} ms", po.pct(p), pb.pct(p)) for p in (50, 95, 99)]
    for name, a, b in rows:
        table.add_row(name, f"{a:,.1f}", f"{b:,.1f}", f"{(b / a if '/s' in name else a / b):.2f}")
    for name in sorted(set(ours.cpu) | set(base.cpu)):
        table.add_row(f"CPU s: {name}", f"{ours.cpu.get(name, 0):,.1f}", f"{base.cpu.get(name, 0):,.1f}", "")
    console.print(table)
    out = HERE / "results" / f"driver-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    record = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "households": args.households,
        "officers": args.officers,
        "baseline_local_activities": args.baseline_local,
        "worker_processes": {"ours": ours_workers, "baseline": baseline_workers},
        "ours": ours.summary(),
        "baseline": base.summary(),
        "ratio_time_per_household": round(base.per_second / ours.per_second, 2),
    }
    if args.paced:
        record["paced"] = {
            "households": args.paced,
            "think_s": args.think,
            "ours": results["ours paced"].summary(),
            "baseline": results["baseline paced"].summary(),
        }
    out.write_text(json.dumps(record, indent=1) + "\n")
    console.print(f"written to bench/results/{out.name}")


if __name__ == "__main__":
    asyncio.run(main())
