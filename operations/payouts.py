"""Payout batches from the command line, the web app and the demo: sign the batch for the officer the front
door authenticated, start (or rejoin) its workflow, follow its progress, wait for the payment channel's
answers. `start_batch` is the one way a front door starts a batch."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from core import signing
from core.errors import Refusal
from db import payouts as payouts_db
from db.engine import Sessions
from models.actor import Actor
from models.finance import BatchAction, BatchProgress, BatchSelection, PayoutBatchInput, PayoutBatchResult
from workflows.authn import batch_step, batch_workflow_id
from workflows.batch import PayoutBatchWorkflow


def batch_id_for(action: BatchAction, tranche: int, selection: BatchSelection, ref: str) -> str:
    """The same command for the same selection is the same batch: running it again rejoins or re-runs it."""
    key = "|".join([selection.district or "", selection.decision_ref or "", ",".join(sorted(selection.codes))])
    return f"{action.value}-t{tranche}-{hashlib.sha256(key.encode()).hexdigest()[:10]}-{ref}"


def sign_batch(ring: signing.SigningRing, inp: PayoutBatchInput) -> PayoutBatchInput:
    """The batch with the front door's assertion: its officer takes this action on every household of the
    selection (each household checks the batch covers it); good for the batch's whole run (BATCH_TTL)."""
    return signing.sign_input(
        ring,
        inp,
        workflow_id=batch_workflow_id(inp.batch_id),
        step=batch_step(inp.action.value),
        user_id=inp.actor.user_id,
        ttl=signing.BATCH_TTL,
    )


async def start_batch(
    client: Client,
    task_queue: str,
    signer: signing.SigningRing,
    actor: Actor,
    action: BatchAction,
    tranche: int,
    selection: BatchSelection,
    *,
    evidence: list[str],
    ref: str,
    concurrency: int | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> PayoutBatchResult:
    """One payout batch, taken by `actor` (whom the calling front door authenticated) on the households of
    `selection`: its id from the selection and `ref` (the same ones again rejoin or re-run it), its input
    signed with the front door's ring `signer`, followed to its end. `concurrency` None: the input's default."""
    try:
        inp = PayoutBatchInput(
            batch_id=batch_id_for(action, tranche, selection, ref),
            action=action,
            tranche=tranche,
            selection=selection,
            actor=actor,
            evidence=evidence,
            **({} if concurrency is None else {"concurrency": concurrency}),
        )
    except ValueError as err:  # pydantic's ValidationError: a blank reference, a concurrency out of range
        raise Refusal("InvalidInput", str(err)) from None
    return await run_batch(client, task_queue, sign_batch(signer, inp), on_progress=on_progress)


async def run_batch(
    client: Client,
    task_queue: str,
    inp: PayoutBatchInput,
    *,
    on_progress: Callable[[BatchProgress], None] | None = None,
    poll: float = 0.3,
) -> PayoutBatchResult:
    handle = await client.start_workflow(
        PayoutBatchWorkflow.run,
        inp,
        id=batch_workflow_id(inp.batch_id),
        task_queue=task_queue,
        # A finished batch may be run again (it skips what is done); a running one is joined, not doubled.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return await follow(handle, PayoutBatchWorkflow.progress, on_progress, poll=poll)


async def follow(handle, progress_query, on_progress: Callable[[BatchProgress], None] | None, *, poll: float):
    """A batch workflow's result, showing its progress (its `progress_query`) every `poll` seconds meanwhile."""
    result_task = asyncio.ensure_future(handle.result())
    while not result_task.done():
        if on_progress:
            try:
                on_progress(await handle.query(progress_query))
            except (RPCError, WorkflowQueryFailedError):  # a query can race the completion; the result follows
                pass
        await asyncio.wait([result_task], timeout=poll)
    result = result_task.result()
    if on_progress:
        on_progress(result.progress)
    return result


async def tranche_counts(
    sessions: Sessions, codes: list[str] | None, statuses: tuple[str, ...]
) -> dict[tuple[int, str], int]:
    """How many of these households' tranches are in each of these statuses: {(tranche, status): n}."""
    async with sessions() as session:
        return await payouts_db.tranche_counts(session, codes, statuses)


async def payment_counts(sessions: Sessions, codes: list[str]) -> dict[str, int]:
    """Payment instructions of these households by status (sent, confirmed, failed)."""
    async with sessions() as session:
        return await payouts_db.payment_counts(session, codes)


async def payments_in_flight(sessions: Sessions, codes: list[str] | None = None) -> int:
    return sum((await tranche_counts(sessions, codes, ("released",))).values())


async def wait_for_payments(sessions: Sessions, codes: list[str] | None = None, *, within: float = 120.0) -> int:
    """Wait until the channel has answered every released payment (or `within` seconds). Returns those left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    # Polling the database: the answers arrive in another process (the worker), not as an in-process event.
    while True:
        left = await payments_in_flight(sessions, codes)
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(0.2)
