"""The pages' words, Vietnamese first; English when the user switches (cookie `lang`)."""

from __future__ import annotations

from models.household import Stage, Step
from models.vocabulary import stage_name, step_name, title

LANGS = ("vi", "en")

WORDS: dict[str, tuple[str, str]] = {
    "app": ("Hỗ trợ xóa nhà tạm, nhà dột nát", "Housing support: temporary and dilapidated houses"),
    "dashboard": ("Tổng quan", "Dashboard"),
    "households": ("Hộ gia đình", "Households"),
    "finance": ("Tài chính", "Finance"),
    "audit": ("Kiểm tra", "Audit"),
    "sign_in": ("Đăng nhập", "Sign in"),
    "sign_out": ("Đăng xuất", "Sign out"),
    "user": ("Tên đăng nhập", "User name"),
    "password": ("Mật khẩu", "Password"),
    "stage": ("Bước", "Stage"),
    "district": ("Huyện", "District"),
    "commune": ("Xã", "Commune"),
    "group": ("Đối tượng", "Group"),
    "support": ("Loại hỗ trợ", "Support"),
    "code": ("Mã hộ", "Code"),
    "head": ("Chủ hộ", "Head of household"),
    "since": ("Từ ngày", "Since"),
    "due": ("Hạn xử lý", "Due by"),
    "overdue": ("Quá hạn", "Overdue"),
    "reserved": ("Đã bố trí (đ)", "Reserved (đ)"),
    "paid": ("Đã chi (đ)", "Paid (đ)"),
    "received": ("Đã nhận (đ)", "Received (đ)"),
    "free": ("Còn lại (đ)", "Free (đ)"),
    "source": ("Nguồn vốn", "Funding source"),
    "filter": ("Lọc", "Filter"),
    "all": ("Tất cả", "All"),
    "timeline": ("Diễn biến hồ sơ", "Timeline"),
    "actions": ("Bước tiếp theo bạn được làm", "Next steps you may take"),
    "no_actions": ("Không có bước nào bạn được làm lúc này.", "There is no step you may take now."),
    "evidence": ("Số hiệu văn bản / chứng từ", "Document reference"),
    "attachments": ("Tệp đính kèm", "Attachments"),
    "reason": ("Lý do", "Reason"),
    "submit": ("Thực hiện", "Take the step"),
    "receipts": ("Xác minh nhận tiền", "Receipts verified"),
    "accept_minutes": (
        "Ghi cả hai biên bản, cách nhau bằng dấu ;: nghiệm thu; đưa vào sử dụng",
        "Both minutes, separated by ';': acceptance; put into use",
    ),
    "open": ("Đang giải quyết", "Open"),
    "new_plan": ("Lập kế hoạch xác minh", "Draw a verification plan"),
    "grievances": ("Khiếu nại, phản ánh", "Grievances"),
    "no_plans": ("Chưa có kế hoạch xác minh.", "No verification plan yet."),
    "no_grievances": ("Không có khiếu nại, phản ánh.", "No grievance."),
    "plan": ("Kế hoạch", "Plan"),
    "paid_households": ("Hộ đã chi", "Paid households"),
    "always_asked": ("Luôn hỏi (rủi ro)", "Always asked (risk)"),
    "drawn": ("Chọn ngẫu nhiên", "Drawn"),
    "confidence": ("Độ tin cậy ± sai số", "Confidence ± margin"),
    "full_list": ("Toàn bộ danh sách", "Full list"),
    "seed": ("Hạt giống", "Seed"),
    "by": ("Người lập", "By"),
    "dossier": ("Hồ sơ quyết toán", "Settlement dossier"),
    "dossier_download": ("Tải hồ sơ quyết toán toàn tỉnh (Excel)", "Download the province's dossier (Excel)"),
    "answered": ("hộ đã trả lời", "households answered"),
    "plan_finished": ("hoàn thành", "finished"),
    "why_asked": ("Lý do chọn", "Why asked"),
    "answer": ("Trả lời", "Answer"),
    "received_full": ("Đã nhận đủ", "Received in full"),
    "received_issues": ("Đã nhận, có vấn đề", "Received with issues"),
    "not_received": ("Chưa nhận", "Not received"),
    "phone": ("Điện thoại", "Phone"),
    "visit": ("Đến nhà", "Visit"),
    "sms": ("Tin nhắn", "SMS"),
    "note": ("Ghi chú", "Note"),
    "category": ("Loại", "Category"),
    "responsible": ("Phụ trách", "Responsible"),
    "resolution": ("Kết quả giải quyết", "Resolution"),
    "payment_not_received": ("Chưa nhận tiền", "Payment not received"),
    "payment_issue": ("Vấn đề chi trả", "Payment issue"),
    "construction": ("Xây dựng", "Construction"),
    "eligibility": ("Đối tượng", "Eligibility"),
    "conduct": ("Cán bộ", "Conduct"),
    "other": ("Khác", "Other"),
    "resolved": ("Đã giải quyết", "Resolved"),
    "unfounded": ("Không có cơ sở", "Unfounded"),
    "trace_payment": ("Tra soát với kênh thanh toán", "Traced with the channel"),
    "findings": ("Kết quả rà soát", "What the review found"),
    "has_house": ("Có nhà", "Has a house"),
    "yes": ("Có", "Yes"),
    "no": ("Không", "No"),
    "foundation": ("Nền, móng", "Foundation, floor"),
    "frame": ("Khung, tường", "Frame, walls"),
    "roof": ("Mái", "Roof"),
    "durable": ("Bền chắc", "Durable"),
    "non_durable": ("Không bền chắc", "Non-durable"),
    "floor_area_m2": ("Diện tích sử dụng (m²)", "Floor area (m²)"),
    "household_size": ("Số nhân khẩu", "Household size"),
    "earlier_support": ("Đã được hỗ trợ nhà ở (chương trình, QĐ)", "Earlier housing support (programme)"),
    "place": ("Nơi niêm yết", "Where it is posted"),
    "posted_on": ("Ngày niêm yết", "Posted on"),
    "objector": ("Người phản ánh", "Raised by"),
    "about": ("Nội dung", "What they said"),
    "raised_on": ("Ngày nhận ý kiến", "Raised on"),
    "objection": ("Ý kiến", "Objection"),
    "outcome": ("Kết luận", "Outcome"),
    "dismissed": ("Không có cơ sở (giữ trong danh sách)", "Dismissed (stays on the list)"),
    "upheld_send_back": ("Có cơ sở: rà soát lại", "Upheld: review again"),
    "upheld_cancel": ("Có cơ sở: đưa ra khỏi danh sách", "Upheld: taken off the list"),
    "programme": ("Chương trình", "Programme"),
    "kind": ("Nội dung điều chỉnh", "Change"),
    "support_type": ("Loại hỗ trợ mới", "New support type"),
    "payee": ("Người nhận tiền mới", "New payee"),
    "withdraw": ("Rút khỏi danh sách", "Withdraw"),
    "change": ("Đề nghị", "Request"),
    "approved": ("Quyết định", "Decision"),
    "approve_change": ("Đồng ý", "Approve"),
    "refuse_change": ("Không đồng ý", "Refuse"),
    "tranches": ("Các đợt chi", "Tranches"),
    "amount": ("Số tiền (đ)", "Amount (đ)"),
    "status": ("Trạng thái", "Status"),
    "bulk": ("Thực hiện cho các hộ đã chọn", "Apply to the selected households"),
    "progress": ("Tiến độ theo huyện và bước", "Progress by district and stage"),
    "money": ("Tiền theo nguồn", "Money by source"),
    "batch": ("Lô chi trả", "Payout batch"),
    "authorise": ("Duyệt chi", "Authorise"),
    "release": ("Chuyển tiền", "Release"),
    "tranche": ("Đợt", "Tranche"),
    "decision": ("Quyết định", "Decision"),
    "due_tranches": ("Các đợt chờ xử lý", "Tranches waiting"),
    "export": ("Xuất Excel đối chiếu", "Reconciliation (Excel)"),
    "reconciliation": ("Đối chiếu theo nguồn", "Reconciliation by source"),
    "search": ("Tìm hộ theo mã", "Find a household by code"),
    "verify": ("Đối chiếu lịch sử × nhật ký × sổ cái", "Histories × audit log × ledger"),
    "run_verify": ("Chạy đối chiếu", "Run the check"),
    "refused": ("Bị từ chối", "Refused"),
    "done": ("Đã thực hiện", "Done"),
    "total": ("Tổng", "Total"),
    "language": ("English", "Tiếng Việt"),
    "entitled": ("Mức hỗ trợ (đ)", "Support entitled (đ)"),
    "deadlines": ("Tiến độ so với các mốc thời hạn", "Progress against the deadlines"),
    "finished": ("hoàn thành", "finished"),
    "days_left": ("còn {} ngày", "{} days left"),
    "missed": ("quá hạn {} ngày, còn {} hộ", "{} days late, {} houses left"),
    "met": ("đã qua hạn", "past"),
    "allocation_queue": ("Hộ chờ phân bổ kinh phí", "Households waiting for fund allocation"),
    "import_list": ("Nhập danh sách", "Import a list"),
    "import_intro": (
        "Tải lên danh sách hộ đã được phê duyệt: tệp Excel (.xlsx) hoặc CSV/TXT. Mọi dòng đều được kiểm tra; "
        "có lỗi thì không dòng nào được nhập.",
        "Upload the approved list of households: an Excel file (.xlsx) or CSV/TXT. Every row is checked; any "
        "problem and no row is imported.",
    ),
    "import_template": ("Tải mẫu danh sách (Excel)", "Download the list's template (Excel)"),
    "import_file": ("Tệp danh sách", "The list's file"),
    "import_check": ("Kiểm tra", "Check"),
    "import_refused": (
        "Danh sách bị từ chối: {} lỗi; chưa nhập gì.",
        "The list is refused: {} problem(s); nothing was imported.",
    ),
    "import_line": ("Dòng", "Line"),
    "import_field": ("Cột", "Field"),
    "import_problem": ("Lỗi", "Problem"),
    "import_more": ("… và {} lỗi khác.", "… and {} more."),
    "import_again": ("Tải lên tệp khác", "Upload another file"),
    "import_good": (
        "Danh sách hợp lệ: {} hộ. Chưa nhập gì cho đến khi bạn xác nhận.",
        "The list is good: {} households. Nothing is imported until you confirm.",
    ),
    "import_by_unit": ("Theo đơn vị", "By unit"),
    "import_first": ("Các hộ đầu danh sách", "The first households"),
    "import_confirm_note": (
        "Xác nhận: danh sách được kiểm tra lại, đối chiếu với sổ đăng ký, ghi lại dưới chữ ký của bạn "
        "và mở hồ sơ cho từng hộ.",
        "Confirm: the list is checked again, against the register too, recorded under your signature, "
        "and a file opened for each household.",
    ),
    "import_confirm": ("Xác nhận nhập danh sách", "Confirm the import"),
    "import_done": (
        "Đã nhập: {} hộ mới, {} hộ đã có; mở {} hồ sơ.",
        "Imported: {} new households, {} already registered; {} files opened.",
    ),
}

GROUPS = {
    "meritorious": ("Người có công", "Meritorious service"),
    "poor": ("Hộ nghèo", "Poor"),
    "near_poor": ("Hộ cận nghèo", "Near-poor"),
    "disaster": ("Thiên tai", "Natural disaster"),
    "other": ("Khác", "Other"),
}
SUPPORT = {"new_build": ("Xây mới", "New build"), "repair": ("Sửa chữa", "Repair")}


class Words:
    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGS else "vi"
        self._i = LANGS.index(self.lang)

    def __call__(self, key: str) -> str:
        return WORDS[key][self._i]

    def stage(self, stage: Stage | str) -> str:
        """A stage's name (models/vocabulary.py), as a label: ``Phân bổ kinh phí``, ``fund allocation``."""
        name = stage_name(stage, self.lang)
        return title(name) if self.lang == "vi" else name

    def step(self, step: Step | str) -> str:
        """A step's name (models/vocabulary.py), as a label: ``Phân bổ kinh phí``, ``allocate``."""
        name = step_name(step, self.lang)
        return title(name) if self.lang == "vi" else name

    def group(self, value: str) -> str:
        return GROUPS.get(value, (value, value))[self._i]

    def support(self, value: str) -> str:
        return SUPPORT.get(value, (value, value))[self._i]
