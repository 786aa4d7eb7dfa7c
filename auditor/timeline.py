"""A household's timeline, from its history alone, for a person (Vietnamese or English) or a program (JSON).

Each line: when (Vietnam time), what happened, who did it (user, role, agency), the evidence and the reason
given, and the money the ledger moved (amount, tranche, sources).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from auditor.history import Sealed, Trail, Transition
from core.formatting import Lang, dong, moment
from models.vocabulary import stage_name, step_name, title

ROLES: dict[str, tuple[str, str]] = {
    "commune_officer": ("cán bộ UBND xã", "commune officer"),
    "district_officer": ("cán bộ UBND huyện", "district officer"),
    "province_officer": ("cán bộ tỉnh", "province officer"),
    "finance_officer": ("cán bộ Sở Tài chính", "Finance officer"),
    "treasury_officer": ("cán bộ Kho bạc", "treasury officer"),
    "payment_channel": ("kênh thanh toán (hệ thống)", "payment channel (system)"),
    "auditor": ("thanh tra, kiểm toán", "auditor"),
    "admin": ("quản trị", "administrator"),
}
WORDS: dict[str, tuple[str, str]] = {
    "opened": ("Mở hồ sơ trên hệ thống", "File opened in the engine"),
    "refused": ("Bị từ chối", "Refused"),
    "policy": ("Áp dụng quy trình phiên bản", "Policy version applied"),
    "submit_payment": ("Gửi lệnh chi tới kênh thanh toán", "Payment instruction sent to the channel"),
    "check_payment": ("Kênh thanh toán trả lời", "Channel answered"),
    "escalate_payment": ("Báo Sở Tài chính: chưa có xác nhận chi", "Escalated to Finance: no confirmation"),
    "send_reminder": ("Nhắc hạn cơ quan phụ trách", "Deadline reminder to the agency"),
    "signal": ("Kênh thanh toán báo có kết quả", "Channel callback"),
    "closed": ("Kết thúc quy trình", "Workflow closed"),
    "terminated": ("Quy trình bị dừng", "Workflow terminated"),
    "by": ("bởi", "by"),
    "evidence": ("căn cứ", "evidence"),
    "reason": ("lý do", "reason"),
    "stage": ("giai đoạn", "stage"),
    "tranche": ("đợt", "tranche"),
    "policy_version": ("quy trình", "policy"),
    "reserved": ("giữ chỗ", "reserved"),
    "paid": ("đã chi", "paid"),
    "released": ("hoàn về nguồn", "released to source"),
    "household": ("Hộ", "Household"),
    "sealed": ("(dữ liệu mã hóa, cần khóa để đọc)", "(encrypted; the key is needed to read it)"),
}
MONEY_WORD = {"reserve": "reserved", "post": "paid", "void": "released"}


def _w(key: str, lang: Lang, table: dict[str, tuple[str, str]] = WORDS) -> str:
    pair = table.get(key)
    return (pair[0] if lang == "vi" else pair[1]) if pair else key


def _step(key: str, lang: Lang) -> str:
    """A step's name (models/vocabulary.py) as a line says it was taken: ``Phân bổ kinh phí``, ``Funds allocated``."""
    try:
        return title(step_name(key, lang, done=True))
    except ValueError:
        return key


def _stage(key: str, lang: Lang) -> str:
    try:
        return stage_name(key, lang)
    except ValueError:
        return key


@dataclass
class Line:
    at: str
    what: str
    who: str = ""
    role: str = ""
    agency: str = ""
    evidence: list[str] = field(default_factory=list)
    reason: str | None = None
    money: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def lines(trail: Trail, lang: Lang = "vi") -> list[Line]:
    out: list[Line] = []
    for ev in trail.events:
        at = moment(ev.at, seconds=True)
        if ev.kind == "step":
            out.append(_step_line(ev.data["transition"], at, lang))
            continue
        line = Line(at=at, what=_w(ev.kind, lang), detail={"kind": ev.kind, "event_id": ev.event_id})
        actor = ev.data.get("actor") if isinstance(ev.data.get("actor"), dict) else None
        if actor:
            line.who, line.role, line.agency = actor["user_id"], _w(actor["role"], lang, ROLES), actor["agency"]
        if ev.kind == "opened":
            policy = ev.data.get("policy")
            line.what += f" ({_w('policy_version', lang)} {policy})" if policy else ""
        elif ev.kind == "refused":
            line.what += f": {_step(ev.data['update'], lang)} — {ev.data['rule']}"
            line.reason = ev.data.get("message")
        elif ev.kind == "policy":
            line.what += f" {ev.data['version']}"
        elif ev.kind in ("submit_payment", "escalate_payment"):
            instr = ev.data.get("input")
            instr = instr.get("instruction", instr) if isinstance(instr, dict) else instr
            if isinstance(instr, dict):
                line.what += f" ({_w('tranche', lang)} {instr['tranche']}, #{instr['attempt']})"
                line.money = dong(instr["amount"], lang)
                line.evidence = [instr["payment_id"]]
            elif isinstance(instr, Sealed):
                line.what += f" {_w('sealed', lang)}"
        elif ev.kind == "check_payment":
            result = ev.data.get("result")
            if isinstance(result, dict):
                status = result["status"]
                line.what += f": {status['state']}"
                line.evidence = [e for e in (status["payment_id"], status.get("bank_ref")) if e]
                line.reason = status.get("reason")
        elif ev.kind == "send_reminder":
            rec = ev.data.get("input")
            if isinstance(rec, dict):
                line.what += f": {rec['agency']} ({_stage(rec['stage'], lang)}, {rec['overdue_days']} d)"
        elif ev.kind == "signal":
            continue  # only a wake-up; the channel's answer (check_payment) is the line that counts
        elif ev.kind == "terminated":
            line.reason = ev.data.get("reason")
        out.append(line)
    return out


def _step_line(t: Transition, at: str, lang: Lang) -> Line:
    rec, outcome = t.record, t.outcome
    what = _step(rec.step.value, lang)
    if rec.tranche:
        what += f" ({_w('tranche', lang)} {rec.tranche})"
    if rec.from_stage != rec.to_stage:
        what += f": {_stage(rec.from_stage.value, lang)} → {_stage(rec.to_stage.value, lang)}"
    money = ""
    if rec.money.value in MONEY_WORD and t.amount:
        money = f"{_w(MONEY_WORD[rec.money.value], lang)} {dong(t.amount, lang)}"
        pieces = [
            f"{p.source} {dong(p.amount, lang)} ({_w('tranche', lang)} {a.tranche})"
            for a in outcome.allocation
            for p in a.pieces
        ]
        if pieces:
            money += ": " + "; ".join(pieces)
    if t.refusal:
        what = f"{_w('refused', lang)}: {what} — {t.refusal}"
    return Line(
        at=at,
        what=what,
        who=rec.actor.user_id,
        role=_w(rec.actor.role, lang, ROLES),
        agency=rec.actor.agency,
        evidence=list(rec.evidence),
        reason=rec.reason,
        money=money,
        detail={
            "kind": "step",
            "seq": rec.seq,
            "step": rec.step.value,
            "key": rec.idempotency_key,
            "amount": t.amount,
            "money": rec.money.value,
            "audit_hash": outcome.audit_hash if outcome else None,
            "policy": t.policy_version,
            "event_id": t.event_id,
        },
    )


def header(trail: Trail, lang: Lang) -> list[tuple[str, str]]:
    h = trail.household
    if isinstance(h, Sealed):
        return [(_w("household", lang), f"{trail.household_code} {_w('sealed', lang)}")]
    if not isinstance(h, dict):
        return [(_w("household", lang), trail.household_code)]
    labels = {
        "vi": ("Chủ hộ", "CCCD", "Địa bàn", "Đối tượng", "Loại hỗ trợ", "Quyết định", "Trạng thái"),
        "en": ("Head of household", "CCCD", "Place", "Group", "Support", "Decision", "Status"),
    }[lang]
    values = (
        h["head_of_household"],
        h["cccd"],
        ", ".join(p for p in (h["commune"], h.get("district"), h["province"]) if p),  # as imported: the history's
        h["beneficiary_group"],
        h["support_type"],
        h["decision_ref"],
        trail.status,
    )
    return [(_w("household", lang), h["code"]), *zip(labels, values, strict=True)]


def as_json(trail: Trail) -> dict[str, Any]:
    """The timeline as data: every transition with its money, and the other events, times in UTC ISO."""

    def opened(value: Any) -> Any:
        return str(value) if isinstance(value, Sealed) else value

    return {
        "workflow_id": trail.workflow_id,
        "run_id": trail.run_id,
        "household_code": trail.household_code,
        "status": trail.status,
        "opened_with_key": trail.opened,
        "sealed_key_ids": sorted(trail.sealed_keys),
        "household": opened(trail.household),
        "transitions": [_transition_json(t) for t in trail.transitions],
        "events": [
            {
                "at": e.at.isoformat(),
                "kind": e.kind,
                "event_id": e.event_id,
                **{k: opened(v) for k, v in e.data.items() if k != "transition"},
            }
            for e in trail.events
            if e.kind != "step"
        ],
    }


def _transition_json(t: Transition) -> dict[str, Any]:
    rec = t.record.model_dump(mode="json")
    outcome = t.outcome.model_dump(mode="json") if t.outcome else {}
    return {
        "seq": rec["seq"],
        "key": rec["idempotency_key"],
        "step": rec["step"],
        "from_stage": rec["from_stage"],
        "to_stage": rec["to_stage"],
        "at": t.record.at.isoformat(),
        "actor": rec["actor"],
        "evidence": rec["evidence"],
        "reason": rec["reason"],
        "policy_version": t.policy_version,
        "money": rec["money"],
        "amount": t.amount,
        "tranche": rec["tranche"],
        "payment_id": rec["payment_id"],
        "allocation": outcome.get("allocation", []),
        "sources": outcome.get("sources"),
        "audit_hash": outcome.get("audit_hash"),
        "recorded": t.recorded,
        "refusal": t.refusal,
    }
