"""Deterministic sample data shaped like Lạng Sơn 2025: its 11 units, communes, officers and households.

The same seed gives the same files. Names and CCCD numbers are invented (CCCD prefix 020 is Lạng Sơn's).
"""

from __future__ import annotations

import csv
import json
import random
import unicodedata
from datetime import date
from pathlib import Path

from operations.csv_list import ALL_COLUMNS

PROVINCE = "Lạng Sơn"
DECISION = "270/QĐ-UBND"

# The 11 district-level units before the July 2025 reform, with a few of their communes each (as on the map of
# Decision 270: Khánh Khê, into which Tràng Các and Đồng Giáp merged on 1 December 2024).
UNITS: dict[str, list[str]] = {
    "Thành phố Lạng Sơn": ["Mai Pha", "Quảng Lạc", "Hoàng Đồng"],
    "Tràng Định": ["Thất Khê", "Quốc Khánh", "Đội Cấn", "Tri Phương"],
    "Văn Lãng": ["Na Sầm", "Hoàng Văn Thụ", "Tân Mỹ", "Thụy Hùng"],
    "Bình Gia": ["Bình Gia", "Hồng Phong", "Hoa Thám", "Thiện Thuật"],
    "Bắc Sơn": ["Bắc Sơn", "Vũ Lễ", "Hưng Vũ", "Tân Tri"],
    "Văn Quan": ["Văn Quan", "Khánh Khê", "Yên Phúc", "Tri Lễ"],
    "Cao Lộc": ["Đồng Đăng", "Hải Yến", "Lộc Yên", "Thạch Đạn"],
    "Lộc Bình": ["Lộc Bình", "Mẫu Sơn", "Tú Mịch", "Khuất Xá"],
    "Chi Lăng": ["Đồng Mỏ", "Vân An", "Quan Sơn", "Hữu Kiên"],
    "Đình Lập": ["Đình Lập", "Bắc Xa", "Kiên Mộc", "Thái Bình"],
    "Hữu Lũng": ["Hữu Lũng", "Yên Thịnh", "Thiện Tân", "Hữu Liên"],
}

SURNAMES = ["Hoàng", "Nông", "Lương", "Vi", "Lăng", "Triệu", "Hà", "Lý", "Mông", "Chu", "Nguyễn", "Lộc", "Hứa"]
MIDDLE = ["Văn", "Thị", "Đức", "Minh", "Thị Thu", "Văn Hải", "Ngọc", "Quang"]
GIVEN = [
    "An",
    "Bình",
    "Chiến",
    "Dũng",
    "Hạnh",
    "Hoa",
    "Hùng",
    "Lan",
    "Mai",
    "Nam",
    "Phúc",
    "Quý",
    "Sinh",
    "Thắng",
    "Tuyết",
    "Vân",
    "Xuân",
    "Yến",
]
GROUP_WEIGHTS = {"meritorious": 15, "poor": 45, "near_poor": 25, "disaster": 10, "other": 5}


def slug(text: str) -> str:
    text = text.replace("Đ", "D").replace("đ", "d")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_text.lower() if ch.isalnum())


def commune_user(district: str, commune: str) -> str:
    return f"x.{slug(district)}.{slug(commune)}"


def district_user(district: str) -> str:
    return f"h.{slug(district)}"


FINANCE_USERS = ("tc.hoang", "tc.nong")  # two officers: the one who allocates may not also settle
TREASURY_USER = "kb.tinh"  # the paying unit that releases payouts Finance authorised
CHANNEL_USER = "kenh.thanhtoan"  # the payment channel's system user: records the bank's answers
VBSP_USER = "nhcs.tinh"
PROVINCE_USER = "tinh.luong"
ADMIN_USER = "qt.admin"
AUDITOR_USER = "kt.vi"


def users() -> list[dict]:
    rows = [
        dict(
            user_id=ADMIN_USER,
            full_name="Quản trị hệ thống",
            role="admin",
            agency="Sở Nông nghiệp và Môi trường",
            province=PROVINCE,
            district=None,
            commune=None,
        ),
        dict(
            user_id=PROVINCE_USER,
            full_name="Lương Văn Tỉnh",
            role="province_officer",
            agency="UBND tỉnh Lạng Sơn",
            province=PROVINCE,
            district=None,
            commune=None,
        ),
        dict(
            user_id=FINANCE_USERS[0],
            full_name="Hoàng Thị Tài",
            role="finance_officer",
            agency="Sở Tài chính",
            province=PROVINCE,
            district=None,
            commune=None,
        ),
        dict(
            user_id=FINANCE_USERS[1],
            full_name="Nông Văn Chính",
            role="finance_officer",
            agency="Sở Tài chính",
            province=PROVINCE,
            district=None,
            commune=None,
        ),
        dict(
            user_id=AUDITOR_USER,
            full_name="Vi Thị Kiểm",
            role="auditor",
            agency="Thanh tra tỉnh",
            province=PROVINCE,
            district=None,
            commune=None,
        ),
        dict(
            user_id=TREASURY_USER,
            full_name="Chu Văn Khố",
            role="treasury_officer",
            agency="Kho bạc Nhà nước khu vực Lạng Sơn",
            province=PROVINCE,
            district=None,
            commune=None,
        ),
        dict(
            user_id=CHANNEL_USER,
            full_name="Kênh thanh toán (hệ thống)",
            role="payment_channel",
            agency="Ngân hàng / Kho bạc (kênh thanh toán)",
            province=PROVINCE,
            district=None,
            commune=None,
        ),
        dict(
            user_id=VBSP_USER,
            full_name="Lăng Thị Vay",
            role="vbsp_officer",
            agency="Ngân hàng Chính sách xã hội chi nhánh Lạng Sơn",
            province=PROVINCE,
            district=None,
            commune=None,
        ),
    ]
    for district, communes in UNITS.items():
        rows.append(
            dict(
                user_id=district_user(district),
                full_name=f"Cán bộ {district}",
                role="district_officer",
                agency=f"UBND {district}",
                province=PROVINCE,
                district=district,
                commune=None,
            )
        )
        for commune in communes:
            rows.append(
                dict(
                    user_id=commune_user(district, commune),
                    full_name=f"Cán bộ xã {commune}",
                    role="commune_officer",
                    agency=f"UBND xã {commune}",
                    province=PROVINCE,
                    district=district,
                    commune=commune,
                )
            )
    return [r | {"active": True} for r in rows]


# Districts where the ethnic-minority and mountainous areas programme (MTQG-DTTS) has identified households.
DTTS_DISTRICTS = frozenset({"Bình Gia", "Đình Lập", "Tràng Định", "Văn Quan"})


def programme_of(district: str, group: str, rng: random.Random) -> str:
    """Most poor and near-poor households are already in a national target programme; others are not."""
    if group not in ("poor", "near_poor") or rng.random() < 0.4:
        return ""
    return "MTQG-DTTS" if district in DTTS_DISTRICTS else "MTQG-GNBV"


def households(
    count: int, *, seed: int = 270, prefix: str = "LS270", decision: str = DECISION, new_builds: int | None = None
) -> list[dict]:
    """`count` households spread over the units; `new_builds` of them new builds (default about 70%)."""
    rng = random.Random(seed)
    places = [(d, c) for d, cs in UNITS.items() for c in cs]
    if new_builds is None:
        new_builds = round(count * 0.7)
    kinds = ["new_build"] * new_builds + ["repair"] * (count - new_builds)
    rng.shuffle(kinds)
    groups = list(GROUP_WEIGHTS)
    weights = list(GROUP_WEIGHTS.values())
    seen_cccd: set[str] = set()
    rows = []
    for i in range(count):
        district, commune = places[i % len(places)] if i < len(places) else rng.choice(places)
        while True:
            year = rng.randint(1940, 2000)
            female = rng.random() < 0.45
            century_digit = (0 if year < 2000 else 2) + (1 if female else 0)
            cccd = f"020{century_digit}{year % 100:02d}{rng.randint(0, 999999):06d}"
            if cccd not in seen_cccd:
                seen_cccd.add(cccd)
                break
        name = f"{rng.choice(SURNAMES)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
        group = rng.choices(groups, weights)[0]
        rows.append(
            dict(
                code=f"{prefix}-{i + 1:05d}",
                head_of_household=name,
                cccd=cccd,
                province=PROVINCE,
                district=district,
                commune=commune,
                beneficiary_group=group,
                support_type=kinds[i],
                decision_ref=decision,
                programme=programme_of(district, group, rng),
            )
        )
    return rows


def write_households_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # utf-8-sig: Excel opens it with the Vietnamese letters intact.
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ALL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


SUPPLEMENTARY_DECISION = "1520/QĐ-UBND"  # the demo's supplementary list (the real one's number is not public)


def supplementary(count: int = 12) -> list[dict]:
    """Households added after Decision 270 by a supplementary decision (Lạng Sơn grew from 4,405 to 6,508)."""
    return households(count, seed=1520, prefix="LS1520", decision=SUPPLEMENTARY_DECISION, new_builds=count // 2)


# ------------------------------------------------------------------------------------------- the reform

REFORM_2024 = "1246/NQ-UBTVQH15"  # from 1 December 2024: Tràng Các and Đồng Giáp merged into Khánh Khê
REFORM_2025 = "1672/NQ-UBTVQH15"  # from 1 July 2025: 65 commune-level units, no districts
REFORM_DATE = date(2025, 7, 1)
WARDS = ("Tam Thanh", "Lương Văn Tri", "Kỳ Lừa", "Đông Kinh")
# The 61 communes after the reform. Lộc Bình and Mẫu Sơn are the resolution's (with their predecessors below);
# the other names are plausible and marked as generated in the gazetteer.
NEW_COMMUNES = (
    "Thất Khê",
    "Đoàn Kết",
    "Tân Tiến",
    "Tràng Định",
    "Quốc Khánh",
    "Kháng Chiến",
    "Quốc Việt",
    "Bình Gia",
    "Tân Văn",
    "Hồng Phong",
    "Hoa Thám",
    "Quý Hòa",
    "Thiện Hòa",
    "Thiện Thuật",
    "Thiện Long",
    "Bắc Sơn",
    "Hưng Vũ",
    "Vũ Lăng",
    "Nhất Hòa",
    "Vũ Lễ",
    "Tân Tri",
    "Văn Quan",
    "Điềm He",
    "Tri Lễ",
    "Yên Phúc",
    "Tân Đoàn",
    "Khánh Khê",
    "Na Sầm",
    "Hoàng Văn Thụ",
    "Thụy Hùng",
    "Hội Hoan",
    "Văn Lãng",
    "Đồng Đăng",
    "Cao Lộc",
    "Công Sơn",
    "Ba Sơn",
    "Lộc Bình",
    "Mẫu Sơn",
    "Na Dương",
    "Lợi Bác",
    "Thống Nhất",
    "Xuân Dương",
    "Khuất Xá",
    "Đình Lập",
    "Thái Bình",
    "Châu Sơn",
    "Kiên Mộc",
    "Chi Lăng",
    "Nhân Lý",
    "Chiến Thắng",
    "Quan Sơn",
    "Bằng Mạc",
    "Vạn Linh",
    "Hữu Lũng",
    "Tuấn Sơn",
    "Tân Thành",
    "Vân Nham",
    "Thiện Tân",
    "Yên Bình",
    "Hữu Liên",
    "Cai Kinh",
)
EXACT_NEW = frozenset({*WARDS, "Lộc Bình", "Mẫu Sơn"})
# Old commune-level units the sample knows (beyond UNITS): the resolution's examples, and the two that merged
# before Decision 270.
EXTRA_OLD = {
    "Lộc Bình": ["Khánh Xuân", "Đồng Bục", "Hữu Khánh", "Yên Khoái"],
    "Văn Quan": ["Tràng Các", "Đồng Giáp"],
}
TOWNS = frozenset(
    {
        "Thất Khê",
        "Na Sầm",
        "Bình Gia",
        "Bắc Sơn",
        "Văn Quan",
        "Đồng Đăng",
        "Lộc Bình",
        "Đồng Mỏ",
        "Đình Lập",
        "Hữu Lũng",
    }
)
# Where each old commune-level unit goes on 1 July 2025; True: as the resolution says, False: generated.
SUCCESSION_2025: dict[tuple[str, str], tuple[str, bool]] = {
    ("Thành phố Lạng Sơn", "Mai Pha"): ("Đông Kinh", False),
    ("Thành phố Lạng Sơn", "Quảng Lạc"): ("Lương Văn Tri", False),
    ("Thành phố Lạng Sơn", "Hoàng Đồng"): ("Kỳ Lừa", False),
    ("Tràng Định", "Thất Khê"): ("Thất Khê", False),
    ("Tràng Định", "Quốc Khánh"): ("Quốc Khánh", False),
    ("Tràng Định", "Đội Cấn"): ("Tân Tiến", False),
    ("Tràng Định", "Tri Phương"): ("Tràng Định", False),
    ("Văn Lãng", "Na Sầm"): ("Na Sầm", False),
    ("Văn Lãng", "Hoàng Văn Thụ"): ("Hoàng Văn Thụ", False),
    ("Văn Lãng", "Tân Mỹ"): ("Văn Lãng", False),
    ("Văn Lãng", "Thụy Hùng"): ("Thụy Hùng", False),
    ("Bình Gia", "Bình Gia"): ("Bình Gia", False),
    ("Bình Gia", "Hồng Phong"): ("Hồng Phong", False),
    ("Bình Gia", "Hoa Thám"): ("Hoa Thám", False),
    ("Bình Gia", "Thiện Thuật"): ("Thiện Thuật", False),
    ("Bắc Sơn", "Bắc Sơn"): ("Bắc Sơn", False),
    ("Bắc Sơn", "Vũ Lễ"): ("Vũ Lễ", False),
    ("Bắc Sơn", "Hưng Vũ"): ("Hưng Vũ", False),
    ("Bắc Sơn", "Tân Tri"): ("Tân Tri", False),
    ("Văn Quan", "Văn Quan"): ("Văn Quan", False),
    ("Văn Quan", "Khánh Khê"): ("Khánh Khê", False),
    ("Văn Quan", "Yên Phúc"): ("Yên Phúc", False),
    ("Văn Quan", "Tri Lễ"): ("Tri Lễ", False),
    ("Cao Lộc", "Đồng Đăng"): ("Đồng Đăng", False),
    ("Cao Lộc", "Hải Yến"): ("Cao Lộc", False),
    ("Cao Lộc", "Lộc Yên"): ("Công Sơn", False),
    ("Cao Lộc", "Thạch Đạn"): ("Ba Sơn", False),
    ("Lộc Bình", "Lộc Bình"): ("Lộc Bình", True),
    ("Lộc Bình", "Khánh Xuân"): ("Lộc Bình", True),
    ("Lộc Bình", "Đồng Bục"): ("Lộc Bình", True),
    ("Lộc Bình", "Hữu Khánh"): ("Lộc Bình", True),
    ("Lộc Bình", "Mẫu Sơn"): ("Mẫu Sơn", True),
    ("Lộc Bình", "Yên Khoái"): ("Mẫu Sơn", True),
    ("Lộc Bình", "Tú Mịch"): ("Mẫu Sơn", True),
    ("Lộc Bình", "Khuất Xá"): ("Khuất Xá", False),
    ("Chi Lăng", "Đồng Mỏ"): ("Chi Lăng", False),
    ("Chi Lăng", "Vân An"): ("Chiến Thắng", False),
    ("Chi Lăng", "Quan Sơn"): ("Quan Sơn", False),
    ("Chi Lăng", "Hữu Kiên"): ("Nhân Lý", False),
    ("Đình Lập", "Đình Lập"): ("Đình Lập", False),
    ("Đình Lập", "Bắc Xa"): ("Châu Sơn", False),
    ("Đình Lập", "Kiên Mộc"): ("Kiên Mộc", False),
    ("Đình Lập", "Thái Bình"): ("Thái Bình", False),
    ("Hữu Lũng", "Hữu Lũng"): ("Hữu Lũng", False),
    ("Hữu Lũng", "Yên Thịnh"): ("Tuấn Sơn", False),
    ("Hữu Lũng", "Thiện Tân"): ("Thiện Tân", False),
    ("Hữu Lũng", "Hữu Liên"): ("Hữu Liên", False),
}
PROVINCE_UNIT = "LS"


def unit_code(*names: str) -> str:
    return "-".join([PROVINCE_UNIT, *(slug(n).upper() for n in names)])


def gazetteer() -> dict:
    """Lạng Sơn's gazetteer for the sample: the province, its 11 district-level units and the communes the
    sample uses until 1 July 2025, the 65 units from then on, and the two reorganisations (the file
    `starter.py reform load` reads; data/gazetteer/lang-son-2025.json is this, written out)."""
    units: list[dict] = [dict(code=PROVINCE_UNIT, name=PROVINCE, level="province")]
    old = {d: [*cs, *EXTRA_OLD.get(d, [])] for d, cs in UNITS.items()}
    for district, communes in old.items():
        units.append(
            dict(
                code=unit_code(district),
                name=district,
                level="district",
                parent=PROVINCE_UNIT,
                valid_until=REFORM_DATE.isoformat(),
            )
        )
        for c in communes:
            merged = c in EXTRA_OLD["Văn Quan"]
            units.append(
                dict(
                    code=unit_code(district, c),
                    name=c,
                    level="town" if c in TOWNS else "commune",
                    parent=unit_code(district),
                    valid_until=(date(2024, 12, 1) if merged else REFORM_DATE).isoformat(),
                )
            )
    for name in (*WARDS, *NEW_COMMUNES):
        units.append(
            dict(
                code=unit_code("X", name),
                name=name,
                level="ward" if name in WARDS else "commune",
                parent=PROVINCE_UNIT,
                valid_from=REFORM_DATE.isoformat(),
                generated=name not in EXACT_NEW,
            )
        )
    successions = [dict(from_unit=unit_code(d), to_unit=PROVINCE_UNIT) for d in old]
    successions += [
        dict(from_unit=unit_code(d, c), to_unit=unit_code("X", new), generated=not exact)
        for (d, c), (new, exact) in SUCCESSION_2025.items()
    ]
    return dict(
        version="lang-son-2025",
        province=PROVINCE,
        source=(
            f"{REFORM_2025} (16/06/2025): 65 đơn vị cấp xã (61 xã, 4 phường); {REFORM_2024} (01/12/2024). "
            "Phường, xã Lộc Bình, Mẫu Sơn và đơn vị trước đó theo nghị quyết; "
            "tên và sắp xếp khác: sinh ra cho dữ liệu mẫu"
        ),
        units=units,
        reorganisations=[
            dict(
                basis=REFORM_2024,
                title="Sắp xếp đơn vị hành chính cấp xã 2023–2025",
                effective="2024-12-01",
                successions=[
                    dict(from_unit=unit_code("Văn Quan", c), to_unit=unit_code("Văn Quan", "Khánh Khê"))
                    for c in EXTRA_OLD["Văn Quan"]
                ],
            ),
            dict(
                basis=REFORM_2025,
                title="Sắp xếp đơn vị hành chính cấp xã tỉnh Lạng Sơn năm 2025 (chính quyền hai cấp)",
                effective=REFORM_DATE.isoformat(),
                successions=successions,
            ),
        ],
    )


def new_commune_user(commune: str) -> str:
    """The officer of a commune of the two-tier map who verifies, reports and completes (x.<unit>)."""
    return f"x.{slug(commune)}"


def chair_user(commune: str) -> str:
    """The chairman of a commune of the two-tier map, who approves, accepts and cancels as the district did."""
    return f"ct.{slug(commune)}"


def officers_of(district: str | None, commune: str) -> tuple[str, str]:
    """Who acts on a household of these units: (the commune's officer, the one who takes the district's steps —
    the district's officer, or after the reform the commune's chairman)."""
    if district is None:
        return new_commune_user(commune), chair_user(commune)
    return commune_user(district, commune), district_user(district)


def new_commune_users() -> list[dict]:
    """Two officers of each commune-level unit after the reform: the one who verifies and reports (x.<unit>),
    and the chairman who approves, accepts and cancels as the district did (ct.<unit>)."""
    rows = []
    for name in (*WARDS, *NEW_COMMUNES):
        kind = "phường" if name in WARDS else "xã"
        for user_id, who in ((new_commune_user(name), "Cán bộ"), (chair_user(name), "Chủ tịch UBND")):
            rows.append(
                dict(
                    user_id=user_id,
                    full_name=f"{who} {kind} {name}",
                    role="commune_officer",
                    agency=f"UBND {kind} {name}",
                    province=PROVINCE,
                    district=None,
                    commune=name,
                    active=True,
                )
            )
    return rows


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "data/demo/households.csv")
    first = households(int(sys.argv[2]) if len(sys.argv) > 2 else 120)
    write_households_csv(target, first)
    extra = [r for r in supplementary() if r["cccd"] not in {f["cccd"] for f in first}]
    # The supplementary list as agencies exchange a decision's attached list: a workbook.
    from models.household import Household
    from operations.csv_list import to_xlsx

    workbook = target.with_name("households_supplementary.xlsx")
    workbook.write_bytes(to_xlsx([Household.model_validate(r) for r in extra]))
    print(f"wrote {target} and {workbook}")
    gazetteer_file = target.parent.parent / "gazetteer" / "lang-son-2025.json"
    gazetteer_file.parent.mkdir(parents=True, exist_ok=True)
    gazetteer_file.write_text(json.dumps(gazetteer(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {gazetteer_file}")


# ---------------------------------------------------------------- the review before the money (models/review.py)

# The demo's lists were posted on paper this many days before the engine records the posting (longer than any
# posting period the policy data sets, so the households it drives may be approved at once).
POSTED_DAYS_AGO = 14


def findings_for(h) -> dict:
    """What the demo's commune review finds for a household (as `VerifyInput.findings`): a house whose
    foundation and roof are not durable (a new build: all three parts), 24 m² for 4 people."""
    new = h.support_type.value == "new_build"
    return {
        "has_house": True,
        "foundation": "non_durable",
        "frame": "non_durable" if new else "durable",
        "roof": "non_durable",
        "floor_area_m2": 24.0,
        "household_size": 4,
    }


def posting_for(h, on: date) -> dict:
    """The demo's posting of a household's list (as `PostInput`'s fields): at its commune's hall, on `on`."""
    return {"place": f"Nhà văn hóa thôn và trụ sở UBND xã {h.commune}", "posted_on": on.isoformat()}
