"""Cross-check three records that are kept apart: the Temporal histories, the hash-chained audit log and the
ledger. Each is written by a different hand (Temporal's server, the recording activity's transaction, the
ledger's triggers), so a change to one shows up against the other two.

What is checked, each a kind of discrepancy an auditor can name (KINDS):
- every step recorded in a history has its audit row, and says the same thing: step, stages, who, role,
  agency, evidence, reason, time; the row's hash is the one the engine was handed back when it recorded the
  step (kept in the history, out of the database's reach);
- every audit row and every ledger transfer of a household belongs to a step of its history;
- money: the amount in the history = the audit row's amount = the sum of the ledger transfers the step
  wrote, and each tranche piece the history names is a transfer of that amount;
- the audit chain: each household's rows are numbered without gaps, linked, and hash to their content;
- a step past a household's last audit row is named as lost (`step_lost`: the database was restored from
  an older backup), not as a removed row; a step re-recorded by `audit restore` with a transfer id another
  transfer had taken is judged through its mark (`restored_steps`): same content, the history's ids;
- who acted: the role was one the policy the household ran under (its version, read from the policy table)
  allowed for that step; the payment channel's answers were recorded by the channel's system role.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from auditor.history import Trail, Transition
from auditor.records import Records
from db.audit import GENESIS, ChainWalk, canonical, row_hash
from models.household import CHANNEL_STEPS, FORWARD, Step
from models.records import MoneyOp

CHANNEL_ROLE = "payment_channel"  # the system user that records the payment channel's answers

KINDS: dict[str, str] = {
    "history_without_audit": "a step in the history has no audit row, though later steps have theirs (a row removed)",
    "step_lost": "a step in the history is past the household's last audit row: the database lost it (restored "
    "from an older backup?); 'audit restore' re-records it",
    "audit_without_history": "an audit row has no step in the history",
    "ledger_without_history": "a ledger transfer has no step in the history",
    "amount_differs": "history, audit log and ledger disagree on an amount",
    "record_differs": "the audit row and the history disagree on who, what, when or why",
    "audit_hash_differs": "the audit row's hash is not the one the engine received when it recorded the step",
    "chain_broken": "the audit chain has a gap, a broken link or a row that does not match its hash",
    "role_not_allowed": "a step was taken by a role the policy in force did not allow",
    "policy_unknown": "a history names a policy version the policy table does not hold, or holds otherwise",
    "history_missing": "the audit log or the ledger has a household with no workflow history",
    "history_sealed": "the history is encrypted and no key to open it was given",
    "archive_altered": "a file of the export differs from its manifest, or a history's binary copy from its JSON",
}
# Audit-row fields and the history's value for each.
_COMPARED = (
    ("step", lambda r: r.step.value),
    ("from_stage", lambda r: r.from_stage.value),
    ("to_stage", lambda r: r.to_stage.value),
    ("actor_user_id", lambda r: r.actor.user_id),
    ("actor_role", lambda r: r.actor.role),
    ("actor_agency", lambda r: r.actor.agency),
    ("evidence", lambda r: list(r.evidence)),
    ("reason", lambda r: r.reason),
    ("occurred_at", lambda r: canonical(r.at)),
)


@dataclass(frozen=True)
class Discrepancy:
    kind: str
    household: str
    where: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "household": self.household, "where": self.where, "detail": self.detail}


@dataclass
class VerifyReport:
    histories: int = 0
    households: int = 0
    transitions: int = 0
    audit_rows: int = 0
    transfers: int = 0
    amount_checked: int = 0  # đồng the three records agree on (reserved, posted and voided, counted once each)
    discrepancies: list[Discrepancy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(d.kind for d in self.discrepancies))

    def add(self, kind: str, household: str, where: str, detail: str) -> None:
        assert kind in KINDS, kind
        self.discrepancies.append(Discrepancy(kind, household, where, detail))

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "histories": self.histories, "households": self.households,
                "transitions": self.transitions, "audit_rows": self.audit_rows, "transfers": self.transfers,
                "amount_checked": self.amount_checked, "by_kind": self.by_kind(),
                "discrepancies": [d.as_dict() for d in self.discrepancies]}  # fmt: skip


def _transition_key(transfer_key: str) -> str:
    # Ledger keys are "<transition key>:<op>[:<piece>]"; transition keys are "<workflow id>#<seq>".
    return transfer_key.split(":", 1)[0]


def verify(trails: Iterable[Trail], records: Records, *, archive_problems: Iterable[str] = ()) -> VerifyReport:
    report = VerifyReport(audit_rows=len(records.audit_rows), transfers=len(records.transfers))
    for problem in archive_problems:
        report.add("archive_altered", "-", "export", problem)

    audit_by_key = {r["idempotency_key"]: r for r in records.audit_rows}
    transfers_by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    transfers_by_id = {t["id"]: t for t in records.transfers}
    for t in records.transfers:
        transfers_by_key[_transition_key(t["idempotency_key"])].append(t)

    last_seq: dict[str, int] = {}
    for r in records.audit_rows:
        last_seq[r["household_code"]] = max(last_seq.get(r["household_code"], 0), r["seq"])
    with_history: set[str] = set()
    sealed: set[str] = set()  # households whose history could not be read: their rows are not judged
    seen_keys: set[str] = set()
    for trail in trails:
        report.histories += 1
        if trail.workflow_type != "HouseholdWorkflow":
            continue  # a payout batch moves nothing itself: its steps are in the households' histories
        code = trail.household_code
        with_history.add(code)
        report.households += 1
        if not trail.opened:
            keys = ", ".join(sorted(trail.sealed_keys))
            report.add("history_sealed", code, f"history {trail.workflow_id}",
                       f"payloads sealed with key(s) {keys}; give the key to verify")  # fmt: skip
            sealed.add(code)
            continue
        history_prev = GENESIS  # the hash the history holds for the step before
        for t in trail.transitions:
            key = t.record.idempotency_key
            seen_keys.add(key)
            if t.recorded:
                report.transitions += 1
                _check_transition(report, t, audit_by_key.get(key), transfers_by_key.get(key, []),
                                  transfers_by_id, records.policies, restored=records.restored.get(key),
                                  lost=t.record.seq > last_seq.get(code, 0), history_prev=history_prev)  # fmt: skip
                history_prev = t.outcome.audit_hash if t.outcome else history_prev
        _check_policy_documents(report, trail, records.policies)

    judged = with_history - sealed
    for key, row in audit_by_key.items():
        code = row["household_code"]
        if key not in seen_keys and code in judged:
            report.add("audit_without_history", code, f"audit row id={row['id']} (seq {row['seq']})",
                       f"step {row['step']} by {row['actor_user_id']} at {row['occurred_at']}, key {key}: "
                       "no such step in the household's history")  # fmt: skip
    for key, transfers in transfers_by_key.items():
        code = transfers[0]["household_code"]
        if key not in seen_keys and code in judged:
            for t in transfers:
                report.add("ledger_without_history", code, f"ledger transfer id={t['id']}",
                           f"{t['kind']} {t['amount']:,} đ {t['debit_account']} → {t['credit_account']}, "
                           f"key {t['idempotency_key']}: no such step in the household's history")  # fmt: skip
    missing = ({r["household_code"] for r in records.audit_rows} | {t["household_code"] for t in records.transfers})
    for code in sorted(missing - with_history):
        report.add("history_missing", code, f"household {code}",
                   "audit rows or ledger transfers exist, but no workflow history was given for it")  # fmt: skip

    _check_chain(report, records.audit_rows)
    return report


def _check_transition(
    report: VerifyReport,
    t: Transition,
    row: dict[str, Any] | None,
    transfers: list[dict[str, Any]],
    transfers_by_id: dict[int, dict[str, Any]],
    policies: dict[str, dict[str, Any]],
    *,
    restored: dict[str, Any] | None = None,
    lost: bool = False,
    history_prev: str = GENESIS,
) -> None:
    rec, outcome = t.record, t.outcome
    assert outcome is not None  # only recorded steps are checked
    code, key, step = rec.household_code, rec.idempotency_key, rec.step.value
    where = f"history {code} seq {rec.seq} ({step}, event {t.event_id})"
    if row is None and lost:
        report.add("step_lost", code, where,
                   f"{step} by {rec.actor.user_id} ({rec.actor.role}, {rec.actor.agency}) at {canonical(rec.at)}, "
                   f"key {key}; the history holds audit hash {outcome.audit_hash}: the database has no row for "
                   "it nor for any later step")  # fmt: skip
        if not transfers:
            _check_role(report, t, where, policies)
            return  # what the step moved was lost with it; a transfer still there is judged below
    elif row is None:
        report.add("history_without_audit", code, where, f"key {key}: the audit log has no row for this step")
    else:
        differs = [f"{name}: history {get(rec)!r}, audit {row[name]!r}"
                   for name, get in _COMPARED if row[name] != get(rec)]  # fmt: skip
        if row["seq"] != rec.seq:
            differs.append(f"seq: history {rec.seq}, audit {row['seq']}")
        if differs:
            report.add("record_differs", code, f"audit row id={row['id']}", "; ".join(differs))
        # A step re-recorded after a restore whose transfer ids were taken meanwhile (or after such a step): its
        # mark holds the history's hash next to the one written again, and the row, with the history's transfer
        # id and linked as the history's chain, must hash to the history's hash: only ids differ.
        as_history = {**row, "transfer_id": outcome.transfer_id}
        remapped = (restored is not None and restored["history_hash"] == outcome.audit_hash
                    and restored["audit_hash"] == row["hash"]
                    and row_hash(history_prev, as_history) == outcome.audit_hash)  # fmt: skip
        if row["hash"] != outcome.audit_hash and not remapped:
            report.add("audit_hash_differs", code, f"audit row id={row['id']}",
                       f"hash {row['hash'][:16]}…, the engine recorded {outcome.audit_hash[:16]}… "
                       "for this step")  # fmt: skip
        if (row["amount"] or None) != (outcome.amount or None):
            report.add("amount_differs", code, f"audit row id={row['id']}",
                       f"audit amount {row['amount']}, history {outcome.amount} ({step})")  # fmt: skip

    moved = sum(x["amount"] for x in transfers)
    expected = (outcome.amount or 0) if rec.money is not MoneyOp.NONE else 0
    if moved != expected:
        ids = ", ".join(str(x["id"]) for x in transfers) or "none"
        report.add("amount_differs", code, where,
                   f"ledger moved {moved:,} đ under this step's key (transfers {ids}); "
                   f"the history says {expected:,} đ")  # fmt: skip
    else:
        report.amount_checked += moved
    moved_ids = {int(k): v for k, v in (restored or {}).get("transfer_ids", {}).items()}
    for tranche in outcome.allocation:
        for piece in tranche.pieces:
            found = transfers_by_id.get(moved_ids.get(piece.transfer_id, piece.transfer_id))
            if found is None or _transition_key(found["idempotency_key"]) != key:
                report.add("amount_differs", code, where,
                           f"tranche {tranche.tranche} piece from {piece.source}: transfer "
                           f"{piece.transfer_id} is not in the ledger under this step")  # fmt: skip
            elif found["amount"] != piece.amount or found["debit_account"] != f"SRC:{piece.source}":
                report.add("amount_differs", code, f"ledger transfer id={found['id']}",
                           f"{found['amount']:,} đ from {found['debit_account']}; the history has "
                           f"{piece.amount:,} đ from SRC:{piece.source} (tranche {tranche.tranche})")  # fmt: skip
    _check_role(report, t, where, policies)


def _check_role(report: VerifyReport, t: Transition, where: str, policies: dict[str, dict[str, Any]]) -> None:
    rec = t.record
    role, code = rec.actor.role, rec.household_code
    if rec.step in CHANNEL_STEPS:
        if role != CHANNEL_ROLE:
            report.add("role_not_allowed", code, where,
                       f"the payment channel's answer was recorded by {rec.actor.user_id} as {role!r}, "
                       f"not by the channel's system role {CHANNEL_ROLE!r}")  # fmt: skip
        return
    doc = policies.get(t.policy_version or "")
    if doc is None:
        report.add("policy_unknown", code, where, f"policy version {t.policy_version!r} is not in the policy table")
        return
    governing = rec.step
    if rec.step is Step.SEND_BACK and rec.from_stage in FORWARD:
        governing = FORWARD[rec.from_stage][0]  # a send-back is governed by the refused step's rule
    allowed = (doc.get("steps", {}).get(governing.value) or {}).get("roles", [])
    if role not in allowed:
        report.add("role_not_allowed", code, where,
                   f"{rec.actor.user_id} took {rec.step.value!r} as {role!r} on {rec.at:%Y-%m-%d}; policy "
                   f"{t.policy_version} allows {', '.join(allowed) or 'no one'}")  # fmt: skip


def _check_policy_documents(report: VerifyReport, trail: Trail, policies: dict[str, dict[str, Any]]) -> None:
    """The policy a household started under, as its history carries it, must be the table's version."""
    carried = trail.policy if isinstance(trail.policy, dict) else None
    if not carried:
        return
    stored = policies.get(carried.get("version", ""))
    if stored is None:
        return  # named per step by _check_role
    roles = {s: sorted(r.get("roles", [])) for s, r in carried.get("steps", {}).items()}
    stored_roles = {s: sorted(r.get("roles", [])) for s, r in stored.get("steps", {}).items()}
    if roles != stored_roles:
        changed = sorted(s for s in roles.keys() | stored_roles.keys() if roles.get(s) != stored_roles.get(s))
        report.add("policy_unknown", trail.household_code, f"history {trail.workflow_id}",
                   f"policy {carried['version']} in the history differs from the table's "
                   f"on steps {', '.join(changed)}")  # fmt: skip


def _check_chain(report: VerifyReport, rows: list[dict[str, Any]]) -> None:
    walk = ChainWalk()
    for row in sorted(rows, key=lambda r: (r["household_code"], r["seq"])):
        if (found := walk.see(row)) is not None:
            report.add("chain_broken", found.household_code, f"audit row id={found.id} (seq {found.seq})", found.reason)
