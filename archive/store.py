"""The history archive: where a closed workflow's history lives once Temporal's retention has removed it.

`HistoryArchive` is what the engine and the readers need of an archive; `PostgresArchive` (the default,
table `workflow_histories`, append-only, its SHA-256 checked by PostgreSQL) implements it, and an object
store can implement the same methods (a write-once object per run and signature, a listing by workflow id,
an append-ordered index for the witness).

A history is kept as Temporal serves it: binary protobuf (temporal.api.history.v1.History), payloads sealed
as stored, so the archive holds no name or CCCD in clear and reads back byte for byte.

The sweep signs each row with the witness's ring (`sign`), which the database never holds. An archive opened
with the witness's public keys (`trusted`) reads and counts only rows they verify: a row the application's
login planted (a forged history for a household whose real one Temporal has deleted, or one inserted ahead
of a run's close to stand in for its copy) is neither read nor taken for the run's archived copy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from temporalio.api.history.v1 import History
from temporalio.client import WorkflowHistory

from core import keyfiles
from core.errors import Refusal
from core.signing import SigningRing
from db import histories
from db.engine import Sessions

HOUSEHOLD_PREFIX = "household-"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ArchivedHistory:
    """One closed run's history as archived."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    started_at: datetime
    closed_at: datetime
    events: int
    history: bytes  # binary protobuf, payloads sealed as stored
    sha256: str
    key_ids: tuple[str, ...] = ()
    seq: int | None = None  # the archive's own order (set once stored)
    archived_at: datetime | None = None
    key_id: str = ""  # the witness key that signed the row ('' unsigned: a worker without a witness)
    signature: str = ""

    def signed_bytes(self) -> bytes:
        """What the witness signs: the run's particulars and the history's hash (which covers its bytes)."""
        fields = {
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "workflow_type": self.workflow_type,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "closed_at": self.closed_at.isoformat(),
            "events": self.events,
            "sha256": self.sha256,
        }
        return b"housing-archive/1\n" + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def signed_by(self, ring: SigningRing) -> ArchivedHistory:
        private = Ed25519PrivateKey.from_private_bytes(ring.keys[ring.active])
        return replace(self, key_id=ring.active, signature=keyfiles.b64(private.sign(self.signed_bytes())))

    def verifies(self, trusted: Mapping[str, bytes]) -> bool:
        """Whether the row's signature verifies under one of the witness's public keys."""
        key = trusted.get(self.key_id)
        if key is None or not self.signature:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(keyfiles.unb64(self.signature), self.signed_bytes())
        except (InvalidSignature, ValueError):
            return False
        return True

    @property
    def household_code(self) -> str | None:
        wid = self.workflow_id
        return wid.removeprefix(HOUSEHOLD_PREFIX) if wid.startswith(HOUSEHOLD_PREFIX) else None

    def workflow_history(self) -> WorkflowHistory:
        """The history as the SDK reads it (replay, the auditors' trail). Refuses a copy whose bytes no longer
        hash to what was archived: an archive read back must be the archive written."""
        if sha256(self.history) != self.sha256:
            raise ArchiveCorrupt(f"{self.workflow_id} run {self.run_id}: archived bytes do not match their SHA-256")
        return WorkflowHistory(self.workflow_id, list(History.FromString(self.history).events))


class ArchiveCorrupt(Exception):
    """An archived history whose bytes do not match the SHA-256 written with them."""


class ArchiveUntrusted(Refusal):
    """The archive holds rows the witness signed, but the reader was given no witness public key: reading
    unverified rows then would read what anyone with the application's login could have planted."""

    def __init__(self) -> None:
        super().__init__(
            "WitnessKeyMissing",
            "the archive's histories are signed by the witness, but no witness "
            "public key file is configured (WITNESS_PUBLIC_KEY_FILE, or witness-key.pub in WITNESS_DIR):"
            " refusing to read unverified histories",
        )


@dataclass(frozen=True)
class ArchiveCounts:
    histories: int
    households: int
    batches: int
    latest: datetime | None = None


@dataclass(frozen=True)
class ArchiveEntry:
    """What the witness covers of each archived run (not the bytes)."""

    seq: int
    workflow_id: str
    run_id: str
    sha256: str


class HistoryArchive(Protocol):
    async def put(self, history: ArchivedHistory) -> bool:
        """Store a closed run's history; False when this copy (the run, with the same signature) is already
        archived (idempotent)."""

    async def get(self, workflow_id: str) -> ArchivedHistory | None:
        """The latest closed run of a workflow, or None."""

    async def archived_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Which of these runs are archived."""

    async def workflow_ids(self, *, households_only: bool = False) -> list[str]:
        """Every archived workflow id, sorted."""

    async def counts(self) -> ArchiveCounts: ...

    async def unsigned(self) -> list[ArchivedHistory]:
        """Rows the witness did not sign (when the archive is opened trusting its keys)."""

    async def entries(self, *, up_to: int | None = None) -> list[ArchiveEntry]:
        """Every archived run in archive order (up to seq `up_to`): what a checkpoint's root covers."""


@dataclass
class PostgresArchive:
    """The archive in PostgreSQL (table `workflow_histories`): each method is one short transaction. With
    `trusted` (the witness's public keys) only rows they verify are read and counted; without, every row
    (an archive kept without a witness)."""

    sessions: Sessions
    trusted: Mapping[str, bytes] | None = None
    # With no trusted keys: refuse to read (ArchiveUntrusted) once any row is signed, rather than read all.
    strict: bool = False

    def _ok(self, h: ArchivedHistory) -> bool:
        return self.trusted is None or h.verifies(self.trusted)

    async def _check_trust(self, session) -> None:
        if self.trusted is None and self.strict and await histories.any_signed(session):
            raise ArchiveUntrusted()

    async def put(self, history: ArchivedHistory) -> bool:
        row = {
            "workflow_id": history.workflow_id,
            "run_id": history.run_id,
            "workflow_type": history.workflow_type,
            "household_code": history.household_code,
            "status": history.status,
            "started_at": history.started_at,
            "closed_at": history.closed_at,
            "events": history.events,
            "key_ids": list(history.key_ids),
            "history": history.history,
            "sha256": history.sha256,
            "key_id": history.key_id,
            "signature": history.signature,
        }
        async with self.sessions() as session:
            new = await histories.insert(session, row)
            await session.commit()
        return new

    async def _rows(self, **where) -> list[ArchivedHistory]:
        """The rows (their particulars, not their bytes) the trusted keys verify, in archive order."""
        async with self.sessions() as session:
            await self._check_trust(session)
            rows = await histories.particulars(session, **where)
        return [h for h in (_from_row({**r, "history": b""}) for r in rows) if self._ok(h)]

    async def get(self, workflow_id: str) -> ArchivedHistory | None:
        # The particulars first (a planted row's bytes are never loaded), then the bytes of the one chosen.
        runs = await self._rows(workflow_id=workflow_id)
        if not runs:
            return None
        latest = max(runs, key=lambda h: (h.closed_at, h.seq))
        async with self.sessions() as session:
            data = await histories.history_bytes(session, latest.seq)
        return replace(latest, history=data)

    async def archived_runs(self, run_ids: Sequence[str]) -> set[str]:
        return {h.run_id for h in await self._rows(run_ids=run_ids)} if run_ids else set()

    async def unsigned(self) -> list[ArchivedHistory]:
        """The rows the trusted keys do not verify (without their bytes): none when nothing is trusted."""
        if self.trusted is None:
            return []
        async with self.sessions() as session:
            rows = await histories.particulars(session)
        return [h for h in (_from_row({**r, "history": b""}) for r in rows) if not self._ok(h)]

    async def workflow_ids(self, *, households_only: bool = False) -> list[str]:
        where = {"workflow_type": "HouseholdWorkflow"} if households_only else {}
        return sorted({h.workflow_id for h in await self._rows(**where)})

    async def counts(self) -> ArchiveCounts:
        runs = {h.run_id: h for h in await self._rows()}.values()
        return ArchiveCounts(
            len(runs),
            sum(h.workflow_type == "HouseholdWorkflow" for h in runs),
            sum(h.workflow_type == "PayoutBatchWorkflow" for h in runs),
            max((h.archived_at for h in runs if h.archived_at), default=None),
        )

    async def entries(self, *, up_to: int | None = None) -> list[ArchiveEntry]:
        # Trusting the witness: only what it signed (a planted row is in no checkpoint, so removing it later
        # is no difference either).
        return [ArchiveEntry(h.seq, h.workflow_id, h.run_id, h.sha256) for h in await self._rows(up_to=up_to)]


def _from_row(row) -> ArchivedHistory:
    return ArchivedHistory(
        workflow_id=row["workflow_id"],
        run_id=row["run_id"],
        workflow_type=row["workflow_type"],
        status=row["status"],
        started_at=row["started_at"],
        closed_at=row["closed_at"],
        events=row["events"],
        history=bytes(row["history"]),
        sha256=row["sha256"].strip(),
        key_ids=tuple(row["key_ids"] or ()),
        seq=row["seq"],
        archived_at=row["archived_at"],
        key_id=row["key_id"] or "",
        signature=row["signature"] or "",
    )


def archived(
    workflow_id: str,
    run_id: str,
    workflow_type: str,
    status: str,
    started_at: datetime,
    closed_at: datetime,
    history: WorkflowHistory,
    key_ids: Iterable[str] = (),
) -> ArchivedHistory:
    """The archive's copy of a history fetched from Temporal."""
    data = History(events=history.events).SerializeToString(deterministic=True)
    return ArchivedHistory(
        workflow_id,
        run_id,
        workflow_type,
        status,
        started_at,
        closed_at,
        len(history.events),
        data,
        sha256(data),
        tuple(sorted(key_ids)),
    )
