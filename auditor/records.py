"""The three records an auditor cross-checks, read from where they live (Temporal and PostgreSQL) or from
an export: workflow histories, the audit log, the ledger (and the policy versions, to judge who may act, and
the front doors' public keys, to check who signed each step)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from temporalio.client import Client, WorkflowHistory

from archive.source import HOUSEHOLDS, Histories
from core.signing import TrustedKeys
from db import audit as audit_db
from db import ledger, restores, signing_keys
from db import policy as policy_db
from db.audit import canonical
from db.engine import Sessions
from models.household import workflow_id_for


@dataclass
class Records:
    """The audit log and the ledger's household transfers as plain rows (JSON-ready), and the policies."""

    audit_rows: list[dict[str, Any]]
    transfers: list[dict[str, Any]]
    policies: dict[str, dict[str, Any]]
    # Steps re-recorded after a database restore (`audit restore`), their marks by idempotency key.
    restored: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The public keys (table signing_keys) the steps' signed assertions are checked against.
    keys: TrustedKeys = field(default_factory=lambda: TrustedKeys({}))


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    # The same text the audit hash covers, so a row read back from an export hashes as it did in PostgreSQL.
    return {
        k: (canonical(v) if isinstance(v, datetime) else v.isoformat() if isinstance(v, date) else v)
        for k, v in row.items()
    }


async def read_records(sessions: Sessions, codes: Iterable[str] | None = None) -> Records:
    wanted = sorted(set(codes)) if codes is not None else None
    async with sessions() as session:
        audit_rows = [_plain(r) for r in await audit_db.rows(session, wanted)]
        transfers = [_plain(r) for r in await ledger.household_transfers(session, wanted)]
        policies = await policy_db.all_workflow_policies(session)
        restored = {r["idempotency_key"]: _plain(r) for r in await restores.marks(session, wanted)}
        keys = await signing_keys.load(session)
    return Records(audit_rows=audit_rows, transfers=transfers, policies=policies, restored=restored, keys=keys)


async def workflow_ids(client: Client, query: str = HOUSEHOLDS) -> list[str]:
    """The workflows the Temporal server holds (archive.source.Histories.ids adds the archived ones)."""
    return sorted({wf.id async for wf in client.list_workflows(query)})


def fetch_histories(
    client: Client, ids: Iterable[str], *, on_done: Callable[[], None] | None = None
) -> AsyncIterator[WorkflowHistory]:
    """Each workflow's latest run's history from the Temporal server alone, in the order of `ids`."""
    return Histories(client, None).each(ids, on_done=on_done)


def household_workflow_ids(codes: Iterable[str]) -> list[str]:
    return [workflow_id_for(c) for c in codes]
