"""The worker's assembly: the activities with their dependencies, the workflows, the sandbox and the payment
channel, wired for worker.py, the embedded stack and the tests. It sits above every layer it wires."""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.batches import BatchActivities
from activities.household import HouseholdActivities
from activities.payments import PaymentActivities
from activities.reorganisation import ReorganisationActivities
from archive.store import PostgresArchive
from archive.sweep import ArchiveActivities
from archive.workflow import HistoryArchiveWorkflow
from core.settings import Settings
from db.engine import Sessions
from finance.channel import HttpBank, PaymentChannel
from workflows.batch import PayoutBatchWorkflow
from workflows.household import HouseholdWorkflow
from workflows.reorganisation import ReorganisationWorkflow
from workflows.runner import workflow_runner
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES


async def ensure_search_attributes(client: Client, namespace: str = "default") -> list[str]:
    """Register the household search attributes where missing (the dev server gets them at start;
    an external cluster or the time-skipping test server through the operator service). Returns those added."""
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError:
        known = set()
    missing = [key.name for key in SEARCH_ATTRIBUTES if key.name not in known]
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing},
            )
        )
    return missing


class ChannelNotConfigured(RuntimeError):
    pass


def stack_channel(settings: Settings) -> HttpBank:
    """The payment channel as the stack gives its workers (runtime/stack.Stack.env): the bank at BANK_URL
    unless PAYMENT_CHANNEL names another; for a command that asks the channel itself (a trace)."""
    return make_channel(settings.model_copy(update={"payment_channel": settings.payment_channel or "bank"}))


def make_channel(settings: Settings) -> HttpBank:
    """The payment channel named in the settings: the bank at BANK_URL, calling back PAYMENT_CALLBACK_URL."""
    check_channel(settings)
    return HttpBank(settings.bank_url, secret=settings.callback_secret(), callback_url=settings.callback_url)


def check_channel(settings: Settings) -> None:
    """Refuse a worker without a payment channel: there is no silent default."""
    if not settings.payment_channel:
        raise ChannelNotConfigured(
            "PAYMENT_CHANNEL is not set: set PAYMENT_CHANNEL=bank and BANK_URL to the bank's API "
            "('python starter.py stack up' starts the simulated bank and sets both for its workers)"
        )
    if settings.payment_channel != "bank":
        raise ChannelNotConfigured(f"unknown PAYMENT_CHANNEL {settings.payment_channel!r}; this build ships 'bank'")


def make_worker(
    client: Client,
    sessions: Sessions,
    settings: Settings,
    *,
    task_queue: str | None = None,
    channel: PaymentChannel | None = None,
    witness: Any = None,
    **options: Any,
) -> Worker:
    """The engine's worker; `witness` (archive.witness.Witness) signs the archive sweep's checkpoints;
    `options` are more `Worker` options (a test simulating older code passes `patch_activation_callback`)."""
    households = HouseholdActivities(sessions)
    payments = PaymentActivities(
        sessions, channel or make_channel(settings), settings.payment_channel_user, record=households._record
    )
    batches = BatchActivities(client, sessions)
    reorganising = ReorganisationActivities(client, sessions)
    # The sweep's archive trusts only rows its witness signed (a planted row does not stand for a run's copy).
    archive = PostgresArchive(sessions, trusted=witness.public_keys() if witness is not None else None)
    archiving = ArchiveActivities(client, archive, witness)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal_task_queue,
        workflows=[HouseholdWorkflow, PayoutBatchWorkflow, HistoryArchiveWorkflow, ReorganisationWorkflow],
        activities=[
            households.record_transition,
            households.send_reminder,
            payments.submit_payment,
            payments.check_payment,
            payments.settle_answer,
            payments.escalate_payment,
            batches.select_payouts,
            batches.select_payout_candidates,
            batches.apply_payout,
            reorganising.select_moves,
            reorganising.apply_move,
            archiving.archive_closed,
            archiving.write_checkpoint,
        ],
        workflow_runner=workflow_runner(client.data_converter),
        **options,
    )
