"""An export an auditor can take away: every history as Temporal writes it, the audit log, the ledger's
household transfers and the policy versions, with a manifest of SHA-256 hashes.

    DIR/manifest.json           what is in the archive: counts, key ids, every file's hash and size
    DIR/SHA256SUMS              the same hashes, for `sha256sum -c SHA256SUMS` without this tool
    DIR/histories/<id>.json     one workflow history each (the JSON `temporal workflow show --output json`
                                writes and `WorkflowHistory.from_json` reads), payloads sealed as stored
    DIR/records/audit_log.jsonl, ledger_transfers.jsonl, workflow_policies.json

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

from temporalio.client import Client, WorkflowHistory

from auditor.records import (
    ALL_WORKFLOWS,
    Records,
    fetch_histories,
    household_workflow_ids,
    read_records,
    workflow_ids,
)
from core.codec import sealed_key_ids
from db.engine import Sessions

FORMAT = "housing-audit-archive/1"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_name(workflow_id: str) -> str:
    # Workflow ids are ours (household-<code>, payout-batch-<id>): letters, digits, '-', '.', '_'.
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in workflow_id) + ".json"


@dataclass
class ExportResult:
    directory: Path
    histories: int
    households: int
    audit_rows: int
    transfers: int
    key_ids: list[str]
    manifest_sha256: str


async def export(
    client: Client,
    sessions: Sessions,
    directory: Path,
    *,
    namespace: str,
    query: str = ALL_WORKFLOWS,
    codes: list[str] | None = None,
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

    ids = household_workflow_ids(codes) if codes else await workflow_ids(client, query)
    if on_total:
        on_total(len(ids))
    households = 0
    async for history in fetch_histories(client, ids, on_done=on_done):
        for ev in history.events:
            for payloads in _payload_lists(ev):
                keys |= sealed_key_ids(payloads)
        kind = history.events[0].workflow_execution_started_event_attributes.workflow_type.name
        households += kind == "HouseholdWorkflow"
        write(f"histories/{_file_name(history.workflow_id)}", history.to_json().encode(),
              workflow_id=history.workflow_id, workflow_type=kind, events=len(history.events))  # fmt: skip

    records = await read_records(sessions, codes)
    write("records/audit_log.jsonl", _jsonl(records.audit_rows), rows=len(records.audit_rows))
    write("records/ledger_transfers.jsonl", _jsonl(records.transfers), rows=len(records.transfers))
    write("records/workflow_policies.json",
          json.dumps(records.policies, ensure_ascii=False, indent=1, sort_keys=True).encode(),
          rows=len(records.policies))  # fmt: skip

    manifest = {
        "format": FORMAT,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "namespace": namespace,
        "histories": len(ids),
        "households": households,
        "audit_rows": len(records.audit_rows),
        "ledger_transfers": len(records.transfers),
        "key_ids": sorted(keys),
        "files": dict(sorted(files.items())),
    }
    body = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    (directory / MANIFEST).write_bytes(body)
    sums = "".join(f"{f['sha256']}  {rel}\n" for rel, f in sorted(files.items()))
    (directory / SUMS).write_text(sums + f"{sha256(body)}  {MANIFEST}\n")
    return ExportResult(directory, len(ids), households, len(records.audit_rows), len(records.transfers),
                        sorted(keys), sha256(body))  # fmt: skip


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()


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

    @classmethod
    def open(cls, directory: Path) -> Archive:
        path = directory / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{directory.name} has no {MANIFEST}: not an export of 'audit export'")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        archive = cls(directory, manifest)
        listed = manifest["files"]
        for rel, about in listed.items():
            f = directory / rel
            if not f.exists():
                archive.problems.append(f"{rel}: listed in the manifest, missing from the archive")
            elif sha256(f.read_bytes()) != about["sha256"]:
                archive.problems.append(f"{rel}: content differs from the manifest's SHA-256 (edited after export)")
        for f in sorted((directory / "histories").glob("*.json")):
            if f"histories/{f.name}" not in listed:
                archive.problems.append(f"histories/{f.name}: not listed in the manifest (added after export)")
        sums = directory / SUMS
        if not sums.exists():
            archive.problems.append(f"{SUMS}: missing (it holds the manifest's own hash)")
        elif f"{sha256(path.read_bytes())}  {MANIFEST}" not in sums.read_text():
            archive.problems.append(f"{MANIFEST}: its hash is not the one {SUMS} gives (the manifest was edited)")
        return archive

    def history_files(self) -> list[tuple[str, Path]]:
        return [(about["workflow_id"], self.directory / rel) for rel, about in self.manifest["files"].items()
                if rel.startswith("histories/") and (self.directory / rel).exists()]  # fmt: skip

    def histories(self) -> Iterator[WorkflowHistory]:
        for workflow_id, path in self.history_files():
            yield WorkflowHistory.from_json(workflow_id, path.read_text(encoding="utf-8"))

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
        return Records(rows("audit_log.jsonl"), rows("ledger_transfers.jsonl"), policies)
