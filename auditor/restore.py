"""Re-record the steps a database restore lost, from the Temporal histories that still hold them.

When PostgreSQL is restored from a backup older than Temporal's state, a household's history knows steps
whose audit rows, transfers, outbox and read-model changes the database no longer has. `restore` writes
them again, in order, from the history's own `TransitionRecord`s, through the one write path the engine
uses (`HouseholdActivities._record`), so each audit row is the row the engine first wrote: same content,
same `occurred_at`, same link, hence the same hash the history was handed back. Transfers get back the ids
the history names (the audit hash covers the step's first transfer id, and later steps post or void the
allocation's pieces by id); an id that another transfer took since the restore cannot be given back: the
step is then written with a new id, mapped for the later steps that name it, and its mark records the
mapping and both hashes (the row's content, with the history's ids, is checked to hash to the history's
hash, so only the ids differ).

Each restored step gets a mark in `restored_steps` (append-only): by whom (an active user with an
administrator's role), when, why, and from which history (workflow id, run id, event). A household whose
database rows contradict its history (a row the history does not hold, another hash, a transfer ahead of
the audit log) is a fork, not a loss, and is refused whole. Running it again restores nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from activities.household import HouseholdActivities
from auditor.history import Trail, Transition
from core.errors import Refusal
from db import audit as audit_db
from db import finance as finance_db
from db import households, ledger, restores, users
from db import policy as policy_db
from db.audit import GENESIS, row_hash
from db.engine import Sessions
from models.finance import PaymentInstruction
from models.household import CHANNEL_STEPS
from models.records import MoneyOp, TransitionRecord


class RestoreRefused(Refusal):
    """A household (or the operator) the restore will not act on; `type` names why."""


@dataclass(frozen=True)
class RestoredStep:
    household: str
    seq: int
    step: str
    actor: str
    at: datetime
    history_hash: str
    audit_id: int | None = None  # None in a dry run
    audit_hash: str | None = None
    amount: int | None = None
    transfer_ids: dict[str, int] = field(default_factory=dict)  # history id → restored id, where they differ

    @property
    def same_hash(self) -> bool:
        return self.audit_hash == self.history_hash


@dataclass
class RestoreReport:
    restored: list[RestoredStep] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)  # households with nothing lost
    refused: list[tuple[str, RestoreRefused]] = field(default_factory=list)
    dry_run: bool = False


def recorded_steps(trail: Trail) -> list[Transition]:
    """The steps the history says were written, in order (a refused attempt leaves its seq to the next)."""
    return sorted((t for t in trail.transitions if t.recorded), key=lambda t: t.record.seq)


def lost_steps(trail: Trail, rows: Sequence[Any], marks: dict[int, Any]) -> list[Transition]:
    """The history's steps beyond the database's last audit row; a fork raises `RestoreRefused`."""
    code = trail.household_code
    steps = recorded_steps(trail)
    if [t.record.seq for t in steps] != list(range(1, len(steps) + 1)):
        raise RestoreRefused(
            "HistoryIncomplete", f"household {code}: the history's recorded steps are not numbered 1…{len(steps)}"
        )
    if len(rows) > len(steps):
        extra = rows[len(steps)]
        raise RestoreRefused(
            "RestoreFork",
            f"household {code}: the database holds step {extra.seq} "
            f"({extra.step}, {extra.actor_user_id}) its history lacks: not a loss",
        )
    for row, t in zip(rows, steps, strict=False):
        expected = t.outcome.audit_hash if t.outcome else None
        mark = marks.get(row.seq)
        same = row.hash == expected or (
            mark is not None and mark.history_hash == expected and mark.audit_hash == row.hash
        )
        if row.seq != t.record.seq or row.idempotency_key != t.record.idempotency_key or not same:
            raise RestoreRefused(
                "RestoreFork",
                f"household {code}: audit row seq {row.seq} ({row.step} by "
                f"{row.actor_user_id}, hash {row.hash[:16]}…) is not the history's step "
                f"{t.record.seq} ({t.record.step.value} by {t.record.actor.user_id}, hash "
                f"{(expected or '')[:16]}…): the records forked",
            )
    return steps[len(rows) :]


async def require_operator(session, user_id: str) -> users.User:
    user = await users.get(session, user_id)
    if user is None:
        raise RestoreRefused("UnknownUser", f"operator {user_id!r} is not registered")
    if not user.active:
        raise RestoreRefused("UserDisabled", f"operator {user_id!r} is disabled")
    allowed = (await policy_db.policy_today(session)).restore_roles
    if user.role not in allowed:
        raise RestoreRefused(
            "OperatorNotAllowed",
            f"operator {user_id!r} is {user.role}; re-recording steps needs the role {' or '.join(allowed)}",
        )
    return user


def _pins(t: Transition, rec: TransitionRecord, first_pending: int | None) -> dict[str, int]:
    """Transfer id by ledger key, as the engine first wrote them (keys as `_move_money` makes them)."""
    outcome = t.outcome
    assert outcome is not None
    key = f"{rec.idempotency_key}:{rec.money.value}"
    pins: dict[str, int] = {}
    if rec.money is MoneyOp.RESERVE and rec.plan_tranches:
        for tranche in outcome.allocation:
            for piece in tranche.pieces:
                pins[f"{key}:t{tranche.tranche}:{piece.source}"] = piece.transfer_id
    elif outcome.transfer_id is not None:
        if rec.money is MoneyOp.RESERVE or not rec.transfer_ids:
            pins[key] = outcome.transfer_id
        else:
            pins[f"{key}:{first_pending}"] = outcome.transfer_id
    return pins


async def _restore_instructions(session, trail: Trail, before_event: int, channel: str) -> None:
    """Payment instructions the history sent before this step that the database lost (the channel's
    answer resolves the payment's row, so the row must be there first)."""
    for ev in trail.events:
        if ev.kind != "submit_payment" or ev.event_id > before_event or not isinstance(ev.data.get("input"), dict):
            continue
        instr = PaymentInstruction.model_validate(ev.data["input"])
        if await finance_db.payment_recorded(session, instr.payment_id):
            continue
        await finance_db.save_instruction(session, instr, channel)


async def _restore_household(
    session, trail: Trail, lost: list[Transition], *, operator: str, reason: str, channel: str
) -> list[RestoredStep]:
    write = HouseholdActivities(None)  # type: ignore[arg-type]  # _record uses only the session given
    code = trail.household_code
    prev_history_hash: str | None = GENESIS  # the hash the history's previous step holds (None: unknown)
    done: list[RestoredStep] = []
    keys = [t.record.idempotency_key for t in lost]
    ahead = await ledger.first_of_steps(session, code, keys)
    if ahead is not None:
        raise RestoreRefused(
            "RestoreFork",
            f"household {code}: ledger transfer {ahead.id} ({ahead.idempotency_key}) "
            "belongs to a step the audit log lacks: the ledger is ahead, not lost",
        )
    if lost[0].record.seq > 1:
        before = recorded_steps(trail)[lost[0].record.seq - 2].outcome
        prev_history_hash = before.audit_hash if before else None
    for t in lost:
        outcome = t.outcome
        assert outcome is not None
        rec = t.record
        if rec.step in CHANNEL_STEPS and rec.payment_id:
            await _restore_instructions(session, trail, t.event_id, channel)
        # The ledger key of a post or void names the pending transfer as the ledger holds it now.
        first = (await restores.current_ids(session, code, rec.transfer_ids[:1]))[0] if rec.transfer_ids else None
        wanted = _pins(t, rec, first)
        taken = await ledger.taken_ids(session, wanted.values())
        token = ledger.PINNED_IDS.set({k: i for k, i in wanted.items() if i not in taken})
        try:
            got = await write._record(session, rec, restoring=True)
        except Refusal as e:
            raise RestoreRefused(
                "RestoreStepRefused",
                f"household {code} step {rec.seq} ({rec.step.value}): the engine refused to write it again: {e}",
            ) from None
        finally:
            ledger.PINNED_IDS.reset(token)
        if got.replayed:
            raise RestoreRefused("RestoreFork", f"household {code}: key {rec.idempotency_key} is already recorded")
        step_ids = _compare(code, t, got)
        row = await audit_db.row_by_id(session, got.audit_id)
        if got.audit_hash != outcome.audit_hash:
            # Only transfer ids may differ (and, after such a step, the link): the history's ids must give back
            # the history's hash.
            as_history = dict(row) | {"transfer_id": outcome.transfer_id}
            if prev_history_hash is None or row_hash(prev_history_hash, as_history) != outcome.audit_hash:
                raise RestoreRefused(
                    "RestoreMismatch",
                    f"household {code} step {rec.seq} ({rec.step.value}): "
                    f"written again it hashes to {got.audit_hash[:16]}…, the history holds "
                    f"{outcome.audit_hash[:16]}…, and not only by transfer ids",
                )
        prev_history_hash = outcome.audit_hash
        await restores.mark(
            session,
            household_code=code,
            seq=rec.seq,
            idempotency_key=rec.idempotency_key,
            step=rec.step.value,
            audit_id=got.audit_id,
            audit_hash=got.audit_hash,
            history_hash=outcome.audit_hash,
            workflow_id=trail.workflow_id,
            run_id=trail.run_id,
            history_event_id=t.event_id,
            transfer_ids={str(k): v for k, v in step_ids.items()},
            restored_by=operator,
            reason=reason,
        )
        done.append(
            RestoredStep(
                code,
                rec.seq,
                rec.step.value,
                rec.actor.user_id,
                rec.at,
                outcome.audit_hash,
                got.audit_id,
                got.audit_hash,
                got.amount,
                {str(k): v for k, v in step_ids.items()},
            )
        )
    # An instruction sent after the last step (a release the channel has not answered yet): its answer, when
    # it comes, resolves the row.
    await _restore_instructions(session, trail, 1 << 62, channel)
    await ledger.advance_transfer_ids(session, 0)
    return done


def _named_ids(t: Transition) -> list[int]:
    outcome = t.outcome
    if outcome is None:
        return []
    return [p.transfer_id for a in outcome.allocation for p in a.pieces] + [outcome.transfer_id or 0]


def _compare(code: str, t: Transition, got) -> dict[int, int]:
    """The step written again moved what the history says it moved; returns the ids that differ."""
    outcome = t.outcome
    assert outcome is not None
    where = f"household {code} step {t.record.seq} ({t.record.step.value})"
    if (got.amount or None) != (outcome.amount or None):
        raise RestoreRefused(
            "RestoreMismatch", f"{where}: written again it moves {got.amount}, the history {outcome.amount}"
        )
    before = [(a.tranche, p.source, p.amount) for a in outcome.allocation for p in a.pieces]
    after = [(a.tranche, p.source, p.amount) for a in got.allocation for p in a.pieces]
    if before != after:
        raise RestoreRefused(
            "RestoreMismatch", f"{where}: the allocation written again ({after}) is not the history's ({before})"
        )
    ids = {
        p.transfer_id: q.transfer_id
        for a, b in zip(outcome.allocation, got.allocation, strict=True)
        for p, q in zip(a.pieces, b.pieces, strict=True)
        if p.transfer_id != q.transfer_id
    }
    if outcome.transfer_id is not None and got.transfer_id != outcome.transfer_id:
        ids[outcome.transfer_id] = got.transfer_id
    return ids


async def restore(
    sessions: Sessions,
    trails: Iterable[Trail],
    *,
    operator: str,
    reason: str,
    channel: str = "restored",
    dry_run: bool = False,
) -> RestoreReport:
    """Re-record every household's lost steps, one household per transaction. Refusals are per household."""
    if not reason.strip():
        raise RestoreRefused("ReasonMissing", "a restore must give its reason")
    async with sessions() as session:
        await require_operator(session, operator)
    report = RestoreReport(dry_run=dry_run)
    trails = list(trails)
    if not dry_run:
        # Ids the histories name and the ledger may have lost are to be given back: move the sequence past
        # them first, so no transfer written meanwhile (here or by the engine) takes one.
        named = [i for trail in trails if trail.opened for t in recorded_steps(trail) for i in _named_ids(t)]
        async with sessions() as session, session.begin():
            await ledger.advance_transfer_ids(session, max(named, default=0))
    for trail in trails:
        if trail.workflow_type != "HouseholdWorkflow":
            continue
        code = trail.household_code
        try:
            if not trail.opened:
                raise RestoreRefused("HistorySealed", f"household {code}: the history is sealed; give the key")
            async with sessions() as session, session.begin():
                if await households.lock(session, code) is None:
                    raise RestoreRefused(
                        "UnknownHousehold",
                        f"household {code} is not in the database: register it from the approved list first",
                    )
                rows, marks = await restores.household_rows(session, code)
                lost = lost_steps(trail, rows, marks)
                if not lost:
                    report.up_to_date.append(code)
                    continue
                if dry_run:
                    report.restored += [
                        RestoredStep(
                            code,
                            t.record.seq,
                            t.record.step.value,
                            t.record.actor.user_id,
                            t.record.at,
                            t.outcome.audit_hash,
                            amount=t.amount,
                        )
                        for t in lost
                        if t.outcome
                    ]
                    continue
                report.restored += await _restore_household(
                    session, trail, lost, operator=operator, reason=reason, channel=channel
                )
        except RestoreRefused as e:
            report.refused.append((code, e))
    return report
