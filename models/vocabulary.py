"""What the engine calls its stages and steps, in Vietnamese and in English: the one vocabulary the pages, the
timeline, the notifications and the command line share.

The Vietnamese names are the programme's own documents' terms (rà soát, thẩm định; phê duyệt danh sách; phân bổ
kinh phí; thi công; nghiệm thu; thanh toán, quyết toán). Each name is written as it reads inside a sentence
("chờ bước phê duyệt"); `title` gives it a capital to stand on its own (a heading, a label, a timeline line).

A step has two English forms: the step itself, as a page offers it ("allocate"), and the line saying it was taken
("funds allocated"). Vietnamese says both with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.formatting import Lang
from models.household import Stage, Step


@dataclass(frozen=True)
class Name:
    vi: str
    en: str
    en_done: str | None = None  # a step: the English for "this step was taken"

    def __call__(self, lang: Lang = "vi", *, done: bool = False) -> str:
        if lang == "vi":
            return self.vi
        return (self.en_done or self.en) if done else self.en


STAGES: dict[Stage, Name] = {
    Stage.VERIFICATION: Name("rà soát, thẩm định", "verification"),
    Stage.APPROVAL: Name("phê duyệt", "approval"),
    Stage.FUND_ALLOCATION: Name("phân bổ kinh phí", "fund allocation"),
    Stage.CONSTRUCTION: Name("thi công", "construction"),
    Stage.ACCEPTANCE: Name("nghiệm thu", "acceptance"),
    Stage.SETTLEMENT: Name("thanh toán, quyết toán", "settlement"),
    Stage.CLOSED: Name("hoàn thành", "closed"),
    Stage.CANCELLED: Name("đã hủy", "cancelled"),
}
STEPS: dict[Step, Name] = {
    Step.VERIFY: Name("rà soát, thẩm định hộ", "verify", "household verified"),
    Step.APPROVE: Name("phê duyệt danh sách", "approve", "household approved"),
    Step.ALLOCATE: Name("phân bổ kinh phí", "allocate", "funds allocated"),
    Step.COMPLETE_CONSTRUCTION: Name("hoàn thành thi công", "complete construction", "construction completed"),
    Step.ACCEPT: Name("nghiệm thu", "accept", "house accepted"),
    Step.SETTLE: Name("quyết toán", "settle", "settled"),
    Step.SEND_BACK: Name("trả lại bước trước", "send back", "sent back"),
    Step.CANCEL: Name("hủy hồ sơ", "cancel", "cancelled"),
    Step.REPORT_PROGRESS: Name("báo cáo tiến độ", "report progress", "progress reported"),
    Step.AUTHORISE_PAYOUT: Name("duyệt chi", "authorise payout", "payout authorised"),
    Step.RELEASE_PAYOUT: Name("chuyển tiền", "release payout", "payout released"),
    Step.PAYMENT_CONFIRMED: Name("ngân hàng xác nhận đã chi", "payment confirmed", "payment confirmed by the channel"),
    Step.PAYMENT_FAILED: Name("chuyển tiền không thành công", "payment failed", "payment failed"),
    Step.SET_POLICY: Name("thay quy trình áp dụng", "set policy", "policy replaced"),
    Step.MOVE: Name("chuyển về đơn vị hành chính mới", "move to the new unit", "moved to the new unit"),
    Step.POST_LIST: Name("niêm yết công khai danh sách", "post the list", "list posted"),
    Step.RECORD_OBJECTION: Name("ghi nhận ý kiến phản ánh", "record an objection", "objection recorded"),
    Step.RESOLVE_OBJECTION: Name("giải quyết ý kiến phản ánh", "resolve an objection", "objection resolved"),
    Step.OVERRIDE_DOUBLE_SUPPORT: Name(
        "xác nhận không trùng hỗ trợ", "override a double-support match", "double-support match overridden"
    ),
    Step.REQUEST_CHANGE: Name("đề nghị điều chỉnh", "request a change", "change requested"),
    Step.DECIDE_CHANGE: Name("phê duyệt điều chỉnh", "decide a change", "change decided"),
}


def stage_name(stage: Stage | str, lang: Lang = "vi") -> str:
    """A stage's name, as it reads inside a sentence: ``phân bổ kinh phí`` (vi), ``fund allocation`` (en)."""
    return STAGES[Stage(stage)](lang)


def step_name(step: Step | str, lang: Lang = "vi", *, done: bool = False) -> str:
    """A step's name: ``phân bổ kinh phí`` (vi), ``allocate`` (en); ``done``: ``funds allocated`` (en)."""
    return STEPS[Step(step)](lang, done=done)


def title(name: str) -> str:
    """A name standing on its own, with a capital: ``Phân bổ kinh phí``."""
    return name[:1].upper() + name[1:]
