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
  allowed for that step; the payment channel's answers were recorded by the channel's system role;
- who signed: every step recorded since the household's steps began to be signed carries its signed
  assertion and the input it covers; the signature verifies under the public key it names (from the table
  signing_keys, or the export's copy), a key of the right holder (the officers' front doors, or the channel
  for its answers) valid when the assertion was issued; it was signed for this household's workflow (or its
  payout batch's), this step and this user, over exactly the signed input; that input says what the audit
  row says; and the history's record carries the same assertion as the audit row.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from activities import channel_answers, officer_steps
from auditor.history import Trail, Transition
from auditor.records import Records
from core import signing
from core.errors import Refusal
from core.formatting import amount
from db.audit import GENESIS, ChainWalk, canonical, row_hash
from models.assertion import CHANNEL, OFFICERS, ActionAssertion
from models.household import CHANNEL_STEPS, Step, workflow_id_for
from models.policy import WorkflowPolicy
from models.records import MoneyOp, TransitionRecord
from workflows import rules

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
    "signature_missing": "a step recorded since the household's steps are signed has no signed assertion (or no "
    "signed input) in its audit row",
    "signature_invalid": "a step's signature does not verify, was signed for another household, step, user or "
    "input, or its signed input says otherwise than its audit row",
    "signature_key_not_valid": "a step is signed by a key the public keys do not hold, of another holder, or not "
    "valid when the assertion was issued",
    "assertion_differs": "the audit row and the history's record carry different assertions or signed inputs",
    # The witness (archive/witness.py): signed checkpoints of the chains' heads and of the archive.
    "checkpoint_missing": "a published checkpoint is newer than the database's, or not the one it holds: the "
    "database lost or hides checkpoints (restored or rolled back)",
    "checkpoint_invalid": "a checkpoint's signature does not verify under the witness public key file, names a "
    "key the file does not hold, or its content does not match its hash",
    "checkpoint_broken": "the database's checkpoints have a gap or a link to the one before that does not match",
    "checkpoint_unverifiable": "no witness public key file (or no published latest.json) to check the checkpoints",
    "checkpoint_chain_differs": "a household's audit row at a signed checkpoint's head is missing or has another "
    "hash: its chain was rewritten since, consistently enough for the chain check to pass",
    "checkpoint_archive_differs": "the archived histories a signed checkpoint covers no longer hash to its root: "
    "removed, replaced or edited since",
    "unknown_household": "a household code asked for that no imported list holds",
    "archive_row_unsigned": "an archived history the witness did not sign (planted with the database's login, or "
    "archived without a witness): never read",
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
        return {
            "ok": self.ok,
            "histories": self.histories,
            "households": self.households,
            "transitions": self.transitions,
            "audit_rows": self.audit_rows,
            "transfers": self.transfers,
            "amount_checked": self.amount_checked,
            "by_kind": self.by_kind(),
            "discrepancies": [d.as_dict() for d in self.discrepancies],
        }


def _transition_key(transfer_key: str) -> str:
    # Ledger keys are "<transition key>:<op>[:<piece>]"; transition keys are "<workflow id>#<seq>".
    return transfer_key.split(":", 1)[0]


def verify(
    trails: Iterable[Trail],
    records: Records,
    *,
    archive_problems: Iterable[str] = (),
    witness: Iterable[tuple[str, str, str, str]] = (),
) -> VerifyReport:
    """`witness`: what archive.witness.check_witness found, (kind, household, where, detail) each."""
    report = VerifyReport(audit_rows=len(records.audit_rows), transfers=len(records.transfers))
    for problem in archive_problems:
        report.add("archive_altered", "-", "export", problem)
    for kind, household, where, detail in witness:
        report.add(kind, household, where, detail)

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
    recorded: dict[str, Transition] = {}  # the histories' recorded steps by key, for the signature checks
    for trail in trails:
        report.histories += 1
        if trail.workflow_type != "HouseholdWorkflow":
            continue  # a payout batch moves nothing itself: its steps are in the households' histories
        code = trail.household_code
        with_history.add(code)
        report.households += 1
        if not trail.opened:
            keys = ", ".join(sorted(trail.sealed_keys))
            report.add(
                "history_sealed",
                code,
                f"history {trail.workflow_id}",
                f"payloads sealed with key(s) {keys}; give the key to verify",
            )
            sealed.add(code)
            continue
        history_prev = GENESIS  # the hash the history holds for the step before
        for t in trail.transitions:
            key = t.record.idempotency_key
            seen_keys.add(key)
            if t.recorded:
                recorded[key] = t
                report.transitions += 1
                _check_transition(
                    report,
                    t,
                    audit_by_key.get(key),
                    transfers_by_key.get(key, []),
                    transfers_by_id,
                    records.policies,
                    restored=records.restored.get(key),
                    lost=t.record.seq > last_seq.get(code, 0),
                    history_prev=history_prev,
                )
                history_prev = t.outcome.audit_hash if t.outcome else history_prev
        _check_policy_documents(report, trail, records.policies)

    judged = with_history - sealed
    for key, row in audit_by_key.items():
        code = row["household_code"]
        if key not in seen_keys and code in judged:
            report.add(
                "audit_without_history",
                code,
                f"audit row id={row['id']} (seq {row['seq']})",
                f"step {row['step']} by {row['actor_user_id']} at {row['occurred_at']}, key {key}: "
                "no such step in the household's history",
            )
    for key, transfers in transfers_by_key.items():
        code = transfers[0]["household_code"]
        if key not in seen_keys and code in judged:
            for t in transfers:
                report.add(
                    "ledger_without_history",
                    code,
                    f"ledger transfer id={t['id']}",
                    f"{t['kind']} {amount(t['amount'], 'en')} đ {t['debit_account']} → {t['credit_account']}, "
                    f"key {t['idempotency_key']}: no such step in the household's history",
                )
    missing = {r["household_code"] for r in records.audit_rows} | {t["household_code"] for t in records.transfers}
    for code in sorted(missing - with_history):
        report.add(
            "history_missing",
            code,
            f"household {code}",
            "audit rows or ledger transfers exist, but no workflow history was found for it, on the "
            "Temporal server or in the archive",
        )

    _check_chain(report, records.audit_rows)
    _check_signatures(report, records.audit_rows, recorded, records.keys, judged)
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
        report.add(
            "step_lost",
            code,
            where,
            f"{step} by {rec.actor.user_id} ({rec.actor.role}, {rec.actor.agency}) at {canonical(rec.at)}, "
            f"key {key}; the history holds audit hash {outcome.audit_hash}: the database has no row for "
            "it nor for any later step",
        )
        if not transfers:
            _check_role(report, t, where, policies)
            return  # what the step moved was lost with it; a transfer still there is judged below
    elif row is None:
        report.add("history_without_audit", code, where, f"key {key}: the audit log has no row for this step")
    else:
        differs = [
            f"{name}: history {get(rec)!r}, audit {row[name]!r}" for name, get in _COMPARED if row[name] != get(rec)
        ]
        if row["seq"] != rec.seq:
            differs.append(f"seq: history {rec.seq}, audit {row['seq']}")
        if differs:
            report.add("record_differs", code, f"audit row id={row['id']}", "; ".join(differs))
        # A step re-recorded after a restore whose transfer ids were taken meanwhile (or after such a step): its
        # mark holds the history's hash next to the one written again, and the row, with the history's transfer
        # id and linked as the history's chain, must hash to the history's hash: only ids differ.
        as_history = {**row, "transfer_id": outcome.transfer_id}
        remapped = (
            restored is not None
            and restored["history_hash"] == outcome.audit_hash
            and restored["audit_hash"] == row["hash"]
            and row_hash(history_prev, as_history) == outcome.audit_hash
        )
        if row["hash"] != outcome.audit_hash and not remapped:
            report.add(
                "audit_hash_differs",
                code,
                f"audit row id={row['id']}",
                f"hash {row['hash'][:16]}…, the engine recorded {outcome.audit_hash[:16]}… for this step",
            )
        if (row["amount"] or None) != (outcome.amount or None):
            report.add(
                "amount_differs",
                code,
                f"audit row id={row['id']}",
                f"audit amount {row['amount']}, history {outcome.amount} ({step})",
            )

    moved = sum(x["amount"] for x in transfers)
    expected = (outcome.amount or 0) if rec.money is not MoneyOp.NONE else 0
    if rec.money is MoneyOp.ADJUST:  # the unpaid pieces voided under this key, then reserved again
        expected += outcome.released or 0
    if moved != expected:
        ids = ", ".join(str(x["id"]) for x in transfers) or "none"
        report.add(
            "amount_differs",
            code,
            where,
            f"ledger moved {amount(moved, 'en')} đ under this step's key (transfers {ids}); "
            f"the history says {amount(expected, 'en')} đ",
        )
    else:
        report.amount_checked += moved
    moved_ids = {int(k): v for k, v in (restored or {}).get("transfer_ids", {}).items()}
    for tranche in outcome.allocation:
        for piece in tranche.pieces:
            found = transfers_by_id.get(moved_ids.get(piece.transfer_id, piece.transfer_id))
            if found is None or _transition_key(found["idempotency_key"]) != key:
                report.add(
                    "amount_differs",
                    code,
                    where,
                    f"tranche {tranche.tranche} piece from {piece.source}: transfer "
                    f"{piece.transfer_id} is not in the ledger under this step",
                )
            elif found["amount"] != piece.amount or found["debit_account"] != f"SRC:{piece.source}":
                report.add(
                    "amount_differs",
                    code,
                    f"ledger transfer id={found['id']}",
                    f"{amount(found['amount'], 'en')} đ from {found['debit_account']}; the history has "
                    f"{amount(piece.amount, 'en')} đ from SRC:{piece.source} (tranche {tranche.tranche})",
                )
    _check_role(report, t, where, policies)


def _check_role(report: VerifyReport, t: Transition, where: str, policies: dict[str, dict[str, Any]]) -> None:
    rec = t.record
    role, code = rec.actor.role, rec.household_code
    if rec.step in CHANNEL_STEPS:
        if role != CHANNEL_ROLE:
            report.add(
                "role_not_allowed",
                code,
                where,
                f"the payment channel's answer was recorded by {rec.actor.user_id} as {role!r}, "
                f"not by the channel's system role {CHANNEL_ROLE!r}",
            )
        return
    doc = policies.get(t.policy_version or "")
    if doc is None:
        report.add("policy_unknown", code, where, f"policy version {t.policy_version!r} is not in the policy table")
        return
    governing = rules.governing_step(rec.step, rec.from_stage)  # a send-back: the refused step's rule
    if rec.step in (Step.SET_POLICY, Step.MOVE):  # the version being replaced names who may replace it
        allowed = WorkflowPolicy.model_validate(doc).policy_admin_roles
    else:
        allowed = (doc.get("steps", {}).get(governing.value) or {}).get("roles", [])
    if role not in allowed:
        report.add(
            "role_not_allowed",
            code,
            where,
            f"{rec.actor.user_id} took {rec.step.value!r} as {role!r} on {rec.at:%Y-%m-%d}; policy "
            f"{t.policy_version} allows {', '.join(allowed) or 'no one'}",
        )


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
        report.add(
            "policy_unknown",
            trail.household_code,
            f"history {trail.workflow_id}",
            f"policy {carried['version']} in the history differs from the table's on steps {', '.join(changed)}",
        )


def _check_chain(report: VerifyReport, rows: list[dict[str, Any]]) -> None:
    walk = ChainWalk()
    for row in sorted(rows, key=lambda r: (r["household_code"], r["seq"])):
        if (found := walk.see(row)) is not None:
            report.add("chain_broken", found.household_code, f"audit row id={found.id} (seq {found.seq})", found.reason)


def _check_signatures(
    report: VerifyReport,
    rows: list[dict[str, Any]],
    recorded: dict[str, Transition],
    keys: signing.TrustedKeys,
    judged: set[str],
) -> None:
    """Each audit row of a household whose history was read, in order: from the first signed step on (in the
    row or in its history's record), every step must be signed, and each signature must hold."""
    signed_from: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: (r["household_code"], r["seq"])):
        code = row["household_code"]
        if code not in judged:
            continue
        t = recorded.get(row["idempotency_key"])
        history_signed = t is not None and t.record.assertion is not None
        if row.get("assertion") is not None or history_signed:
            signed_from.setdefault(code, row["seq"])
        if code not in signed_from:
            continue  # recorded before this household's steps were signed
        where = f"audit row id={row['id']} (seq {row['seq']}, {row['step']})"
        if row.get("assertion") is None or row.get("signed_input") is None:
            said = (
                "its history's record carries one"
                if history_signed
                else (f"the household's steps are signed from seq {signed_from[code]} on")
            )
            report.add(
                "signature_missing",
                code,
                where,
                f"{row['step']} by {row['actor_user_id']} has no signed assertion and signed input; {said}",
            )
            continue
        _check_row_signature(report, row, t, keys, where)


def _check_row_signature(
    report: VerifyReport, row: dict[str, Any], t: Transition | None, keys: signing.TrustedKeys, where: str
) -> None:
    code, signed = row["household_code"], row["signed_input"]
    try:
        a = ActionAssertion.model_validate(row["assertion"])
    except ValueError:
        report.add("signature_invalid", code, where, "the row's assertion is not a readable signed assertion")
        return
    if t is not None and (t.record.assertion != a or t.record.signed_input != signed):
        report.add(
            "assertion_differs",
            code,
            where,
            f"the history's record of seq {row['seq']} carries assertion "
            f"{t.record.assertion.nonce if t.record.assertion else 'none'}, the audit row {a.nonce}"
            + ("" if t.record.signed_input == signed else "; their signed inputs differ"),
        )
    key = keys.keys.get(a.key_id)
    holder = CHANNEL if Step(row["step"]) in CHANNEL_STEPS else OFFICERS
    if key is None or key.holder != holder or not key.valid_at(a.issued_at):
        why = (
            "is not among the public keys"
            if key is None
            else f"is a key of {key.holder}, not of {holder}"
            if key.holder != holder
            else f"was not valid at {a.issued_at.isoformat()}, when the assertion was "
            f"issued (valid {key.valid_from.isoformat()} to "
            f"{key.valid_until.isoformat() if key.valid_until else 'now'})"
        )
        report.add("signature_key_not_valid", code, where, f"signed by key {a.key_id!r}, which {why}")
        return
    try:
        _verify_signed(row, a, signed, keys, t)
    except (signing.Unauthenticated, Refusal) as err:
        report.add("signature_invalid", code, where, f"{a.user_id}'s assertion {a.nonce}: {err.message}")


def _verify_signed(
    row: dict[str, Any], a: ActionAssertion, signed: dict[str, Any], keys: signing.TrustedKeys, t: Transition | None
) -> None:
    """The signature holds for what the row records, as the recording activity checked it
    (activities/officer_steps.py, activities/channel_answers.py); raises naming what does not."""
    step, user = Step(row["step"]), row["actor_user_id"]
    workflow_id = workflow_id_for(row["household_code"])
    if step in CHANNEL_STEPS:
        channel_answers.check_channel_answer(
            keys,
            a,
            signed,
            step=step,
            workflow_id=workflow_id,
            user_id=user,
            evidence=list(row["evidence"] or []),
            payment_id=t.record.payment_id if t is not None else None,
            tranche=t.record.tranche if t is not None else None,
        )
        return
    occurred = datetime.fromisoformat(row["occurred_at"]) if isinstance(row["occurred_at"], str) else row["occurred_at"]
    # What the row records (the history's record for what the row has no column for), when there is a history.
    rec = _as_row_says(t.record, row) if t is not None else None
    officer_steps.check_signed_step(
        keys, a, signed, workflow_id=workflow_id, step=step, user_id=user, at=occurred, rec=rec
    )


def _as_row_says(rec: TransitionRecord, row: dict[str, Any]) -> TransitionRecord:
    actor = rec.actor.model_copy(
        update={"user_id": row["actor_user_id"], "role": row["actor_role"], "agency": row["actor_agency"]}
    )
    return rec.model_copy(update={"actor": actor, "evidence": list(row["evidence"] or []), "reason": row["reason"]})
