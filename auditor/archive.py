"""An export an auditor can take away: every history as Temporal writes it, the audit log, the ledger's
household transfers and the policy versions, with a manifest of SHA-256 hashes.

    DIR/manifest.json           what is in the archive: counts, key ids, every file's hash and size
    DIR/SHA256SUMS              the same hashes, for `sha256sum -c SHA256SUMS` without this tool
    DIR/histories/<id>.json     one workflow history each (the JSON `temporal workflow show --output json`
                                writes and `WorkflowHistory.from_json` reads), payloads sealed as stored
    DIR/histories/<id>.binpb    the same history in protobuf's binary form (temporal.api.history.v1.History),
                                which replay reads: parsing the JSON costs more CPU than replaying it
    DIR/records/audit_log.jsonl, ledger_transfers.jsonl, workflow_policies.json
    DIR/records/signing_keys.json  the front doors' public keys (table signing_keys), which verify each
                                step's signed assertion; the manifest names their ids (compare them with the
                                ones the programme publishes: whoever rewrites an export can swap keys too)

Payloads stay encrypted in the archive: whoever holds the archive without the key sees no name or CCCD.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowHistory

from archive.source import ALL_WORKFLOWS, Histories
from archive.store import HistoryArchive, PostgresArchive
from auditor.records import Records, household_workflow_ids, read_records
from core.codec import sealed_key_ids
from core.signing import PublicKey, TrustedKeys
from db.engine import Sessions

FORMAT = "housing-audit-archive/2"  # 2: each history also as binary protobuf
READABLE = ("housing-audit-archive/1", FORMAT)
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_name(workflow_id: str, suffix: str = ".json") -> str:
    # Workflow ids are ours (household-<code>, payout-batch-<id>): letters, digits, '-', '.', '_'.
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in workflow_id) + suffix


def read_history(workflow_id: str, path: Path) -> WorkflowHistory:
    """A history file of an export, JSON or binary by its name."""
    if path.suffix == ".binpb":
        return WorkflowHistory(workflow_id, list(History.FromString(path.read_bytes()).events))
    return WorkflowHistory.from_json(workflow_id, path.read_text(encoding="utf-8"))


def copy_differs(json_history: WorkflowHistory, binary: Path) -> str | None:
    """How a history's binary copy differs from its JSON, or None when they hold the same events."""
    copy = History.FromString(binary.read_bytes()).events
    if len(copy) != len(json_history.events):
        return f"{len(copy)} events, the JSON has {len(json_history.events)}"
    for mine, theirs in zip(json_history.events, copy, strict=True):
        if mine != theirs:
            return f"event {mine.event_id} differs"
    return None


@dataclass
class ExportResult:
    directory: Path
    histories: int
    households: int
    audit_rows: int
    transfers: int
    key_ids: list[str]
    manifest_sha256: str
    signing_key_ids: list[str] = field(default_factory=list)  # the public keys exported with the records
    from_archive: int = 0  # histories Temporal no longer held, taken from the archive
    missing: list[str] = field(default_factory=list)  # asked for and found in neither


async def export(
    client: Client,
    sessions: Sessions,
    directory: Path,
    *,
    namespace: str,
    query: str = ALL_WORKFLOWS,
    codes: list[str] | None = None,
    archive: HistoryArchive | None = None,
    on_total: Callable[[int], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> ExportResult:
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / MANIFEST).exists() or any((directory / "histories").glob("*.json")):
        raise FileExistsError(f"{directory.name} already holds an export; export into an empty folder")
    (directory / "histories").mkdir()
    (directory / "records").mkdir()
    files: dict[str, dict[str, Any]] = {}
    keys: set[str] = set()

    def write(rel: str, data: bytes, **about: Any) -> None:
        (directory / rel).write_bytes(data)
        files[rel] = {"sha256": sha256(data), "bytes": len(data), **about}

    # From Temporal while it holds a workflow, from the archive once retention has removed it.
    source = Histories(client, archive or PostgresArchive(sessions))
    ids = household_workflow_ids(codes) if codes else await source.ids(query)
    if on_total:
        on_total(len(ids))
    households = 0
    async for history in source.each(ids, on_done=on_done):
        keys |= history_key_ids(history)
        kind = history.events[0].workflow_execution_started_event_attributes.workflow_type.name
        households += kind == "HouseholdWorkflow"
        rel = f"histories/{_file_name(history.workflow_id)}"
        write(
            rel,
            history.to_json().encode(),
            workflow_id=history.workflow_id,
            workflow_type=kind,
            events=len(history.events),
        )
        # Written from the same events as the JSON; `audit verify --from` compares the two.
        write(
            f"histories/{_file_name(history.workflow_id, '.binpb')}",
            History(events=history.events).SerializeToString(),
            copy_of=rel,
        )

    records = await read_records(sessions, codes)
    write("records/audit_log.jsonl", _jsonl(records.audit_rows), rows=len(records.audit_rows))
    write("records/ledger_transfers.jsonl", _jsonl(records.transfers), rows=len(records.transfers))
    write(
        "records/workflow_policies.json",
        json.dumps(records.policies, ensure_ascii=False, indent=1, sort_keys=True).encode(),
        rows=len(records.policies),
    )
    public = [k.as_dict() for _, k in sorted(records.keys.keys.items())]
    write("records/signing_keys.json", json.dumps(public, ensure_ascii=False, indent=1).encode(), rows=len(public))
    if records.restored:  # steps re-recorded after a database restore (`audit restore`): verify reads the marks
        marks = sorted(records.restored.values(), key=lambda m: (m["household_code"], m["seq"]))
        write("records/restored_steps.jsonl", _jsonl(marks), rows=len(marks))

    manifest = {
        "format": FORMAT,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "namespace": namespace,
        "histories": len(ids) - len(source.missing),
        "histories_from_archive": source.from_archive,
        "histories_missing": source.missing,  # asked for (by code) and found neither in Temporal nor archived
        "households": households,
        "audit_rows": len(records.audit_rows),
        "ledger_transfers": len(records.transfers),
        "key_ids": sorted(keys),
        "signing_key_ids": [k["key_id"] for k in public],
        "files": dict(sorted(files.items())),
    }
    body = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    (directory / MANIFEST).write_bytes(body)
    sums = "".join(f"{f['sha256']}  {rel}\n" for rel, f in sorted(files.items()))
    (directory / SUMS).write_text(sums + f"{sha256(body)}  {MANIFEST}\n")
    return ExportResult(
        directory,
        manifest["histories"],
        households,
        len(records.audit_rows),
        len(records.transfers),
        sorted(keys),
        sha256(body),
        manifest["signing_key_ids"],
        source.from_archive,
        source.missing,
    )


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()


def history_key_ids(history: WorkflowHistory) -> set[str]:
    """The ids of the payload keys that sealed a history's data."""
    keys: set[str] = set()
    for ev in history.events:
        for payloads in _payload_lists(ev):
            keys |= sealed_key_ids(payloads)
    return keys


def _payload_lists(ev) -> Iterator[Any]:
    """The payload lists of the events that carry the household's data."""
    if ev.HasField("workflow_execution_started_event_attributes"):
        yield ev.workflow_execution_started_event_attributes.input.payloads
    elif ev.HasField("activity_task_scheduled_event_attributes"):
        yield ev.activity_task_scheduled_event_attributes.input.payloads
    elif ev.HasField("workflow_execution_update_accepted_event_attributes"):
        yield ev.workflow_execution_update_accepted_event_attributes.accepted_request.input.args.payloads
    elif ev.HasField("marker_recorded_event_attributes") and "result" in ev.marker_recorded_event_attributes.details:
        yield ev.marker_recorded_event_attributes.details["result"].payloads  # a local activity's answer


@dataclass
class Archive:
    """An export read back. `problems` names every file whose bytes differ from the manifest, and every
    file the manifest lists that is missing or that is there without being listed."""

    directory: Path
    manifest: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    _compared: set[str] = field(default_factory=set)  # the JSON files whose binary copy has been compared

    @classmethod
    def open(cls, directory: Path) -> Archive:
        path = directory / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{directory.name} has no {MANIFEST}: not an export of 'audit export'")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") not in READABLE:
            raise ValueError(f"{MANIFEST}: format {manifest.get('format')!r}, expected one of {', '.join(READABLE)}")
        archive = cls(directory, manifest)
        listed = manifest["files"]
        for rel, about in listed.items():
            f = directory / rel
            if not f.exists():
                archive.problems.append(f"{rel}: listed in the manifest, missing from the archive")
            elif sha256(f.read_bytes()) != about["sha256"]:
                archive.problems.append(f"{rel}: content differs from the manifest's SHA-256 (edited after export)")
        for f in sorted((directory / "histories").iterdir()):
            if f"histories/{f.name}" not in listed:
                archive.problems.append(f"histories/{f.name}: not listed in the manifest (added after export)")
        sums = directory / SUMS
        if not sums.exists():
            archive.problems.append(f"{SUMS}: missing (it holds the manifest's own hash)")
        elif f"{sha256(path.read_bytes())}  {MANIFEST}" not in sums.read_text():
            archive.problems.append(f"{MANIFEST}: its hash is not the one {SUMS} gives (the manifest was edited)")
        return archive

    def history_files(self, *, binary: bool = False) -> list[tuple[str, Path]]:
        """(workflow id, file) of every history: the JSON, or with `binary` its binary copy where the
        export has one (an export of format 1 has none)."""
        copies = self._copies() if binary else {}
        return [
            (about["workflow_id"], self.directory / copies.get(rel, rel))
            for rel, about in self.manifest["files"].items()
            if "workflow_id" in about and (self.directory / rel).exists()
        ]

    def _copies(self) -> dict[str, str]:
        return {
            about["copy_of"]: rel
            for rel, about in self.manifest["files"].items()
            if "copy_of" in about and (self.directory / rel).exists()
        }

    def histories(self, files: list[tuple[str, Path]] | None = None) -> Iterator[WorkflowHistory]:
        """The histories from their JSON (all, or these of `history_files()`). Each binary copy is compared
        with its JSON on the way: a copy that differs is added to `problems`."""
        copies = self._copies()
        for workflow_id, path in self.history_files() if files is None else files:
            history = read_history(workflow_id, path)
            rel = path.relative_to(self.directory).as_posix()
            if rel in copies and rel not in self._compared:
                self._compared.add(rel)
                if how := copy_differs(history, self.directory / copies[rel]):
                    self.problems.append(f"{copies[rel]}: not the same history as {rel} ({how})")
            yield history

    def compare_copies(self) -> None:
        """Compare every binary copy not yet compared by `histories()` with its JSON, adding any difference
        to `problems`: after a reader went through some of the histories, the rest are parsed only here."""
        rest = [
            (w, p) for w, p in self.history_files() if p.relative_to(self.directory).as_posix() not in self._compared
        ]
        for _ in self.histories(rest):
            pass

    def records(self, codes: list[str] | None = None) -> Records:
        """The exported audit log, ledger transfers and policies; only these households' rows if given."""
        base = self.directory / "records"
        wanted = set(codes) if codes else None

        def rows(name: str) -> list[dict[str, Any]]:
            p = base / name
            if not p.exists():
                return []
            found = (json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line)
            return [r for r in found if wanted is None or r["household_code"] in wanted]

        policies_path = base / "workflow_policies.json"
        policies = json.loads(policies_path.read_text(encoding="utf-8")) if policies_path.exists() else {}
        restored = {m["idempotency_key"]: m for m in rows("restored_steps.jsonl")}
        keys_path = base / "signing_keys.json"  # none in an export from before signed actions
        public = json.loads(keys_path.read_text(encoding="utf-8")) if keys_path.exists() else []
        return Records(
            rows("audit_log.jsonl"),
            rows("ledger_transfers.jsonl"),
            policies,
            restored,
            keys=TrustedKeys.of(PublicKey.from_dict(k) for k in public),
        )
