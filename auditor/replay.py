"""Replay histories against the current workflow code, as a worker would on a restart: the proof that the
code running today still reproduces every decision recorded. No server is needed, only the histories (and
the key that opens their payloads).

The core compares every command the code issues with the event the history holds; that comparison is the
proof, and it does not need the workflow sandbox. The sandbox guards against a call that could *become*
non-deterministic (the clock, I/O, randomness) and costs about 40 ms per history here, so the auditors'
replay runs without it by default (`sandbox=True` to run with it); the test suite replays its checked-in
histories inside the sandbox, where such a call is caught before it ships."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Interceptor, Replayer

from auditor.archive import read_history
from core.codec import KeyRing, for_reading, with_codec
from core.converter import DATA_CONVERTER
from workflows.batch import PayoutBatchWorkflow
from workflows.household import HouseholdWorkflow
from workflows.runner import workflow_runner


@dataclass(frozen=True)
class ReplayFailure:
    workflow_id: str
    run_id: str
    kind: str  # NondeterminismError, or the error that stopped the replay
    reason: str


@dataclass
class ReplayReport:
    replayed: int = 0
    failures: list[ReplayFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def replayer(converter: DataConverter, *, sandbox: bool = False, interceptors: Sequence[Interceptor] = ()) -> Replayer:
    # An auditor replays histories from before encryption too: plain payloads are read, not refused.
    converter = for_reading(converter)
    return Replayer(
        workflows=[HouseholdWorkflow, PayoutBatchWorkflow],
        data_converter=converter,
        workflow_runner=workflow_runner(converter, sandbox=sandbox),
        interceptors=interceptors,
    )


async def replay(
    histories: Iterable[WorkflowHistory] | AsyncIterator[WorkflowHistory],
    converter: DataConverter,
    *,
    on_done: Callable[[], None] | None = None,
    sandbox: bool = False,
) -> ReplayReport:
    """Replay every history; a history the code no longer reproduces is reported with its reason."""
    report = ReplayReport()
    async with replayer(converter, sandbox=sandbox).workflow_replay_iterator(_aiter(histories)) as results:
        async for result in results:
            report.replayed += 1
            failure = result.replay_failure
            if failure is not None:
                started = result.history.events[0].workflow_execution_started_event_attributes
                report.failures.append(
                    ReplayFailure(
                        result.history.workflow_id,
                        started.original_execution_run_id,
                        type(failure).__name__,
                        str(failure),
                    )
                )
            if on_done:
                on_done()
    return report


async def _aiter(histories):
    if hasattr(histories, "__aiter__"):
        async for h in histories:
            yield h
    else:
        for h in histories:
            yield h


def _replay_chunk(files: list[tuple[str, str]], keys: str | None, sandbox: bool) -> tuple[int, list[ReplayFailure]]:
    """One worker process's share: read and replay these history files (runs in a child process)."""
    converter = with_codec(DATA_CONVERTER, KeyRing.parse(keys) if keys else None)  # replay() reads it as an auditor
    histories = (read_history(wid, Path(path)) for wid, path in files)
    report = asyncio.run(replay(histories, converter, sandbox=sandbox))
    return report.replayed, report.failures


async def replay_files(
    files: list[tuple[str, Path]],
    keys: str | None,
    *,
    jobs: int,
    chunk: int = 8,
    on_done: Callable[[int], None] | None = None,
    sandbox: bool = False,
) -> ReplayReport:
    """Replay history files in `jobs` processes (JSON parsing and replay are CPU-bound: one process uses
    one core). `keys` is the key ring's text, handed to each process."""
    report = ReplayReport()
    loop = asyncio.get_running_loop()
    parts = [[(w, str(p)) for w, p in files[i : i + chunk]] for i in range(0, len(files), chunk)]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [loop.run_in_executor(pool, _replay_chunk, part, keys, sandbox) for part in parts]
        for done in asyncio.as_completed(futures):
            replayed, failures = await done
            report.replayed += replayed
            report.failures.extend(failures)
            if on_done:
                on_done(replayed)
    return report
