"""Deterministic sample data shaped like Lạng Sơn 2025: its 11 units, communes, officers and households.

The same seed gives the same files. Names and CCCD numbers are invented (CCCD prefix 020 is Lạng Sơn's).
"""

from __future__ import annotations

import csv
import random
import unicodedata
from pathlib import Path

from operations.csv_list import ALL_COLUMNS

PROVINCE = "Lạng Sơn"
DECISION = "270/QĐ-UBND"

# The 11 district-level units before the July 2025 reform, with a few of their communes each.
UNITS: dict[str, list[str]] = {
    "Thành phố Lạng Sơn": ["Mai Pha", "Quảng Lạc", "Hoàng Đồng"],
    "Tràng Định": ["Thất Khê", "Quốc Khánh", "Đội Cấn", "Tri Phương"],
    "Văn Lãng": ["Na Sầm", "Hoàng Văn Thụ", "Tân Mỹ", "Thụy Hùng"],
    "Bình Gia": ["Bình Gia", "Hồng Phong", "Hoa Thám", "Thiện Thuật"],
    "Bắc Sơn": ["Bắc Sơn", "Vũ Lễ", "Hưng Vũ", "Tân Tri"],
    "Văn Quan": ["Văn Quan", "Tràng Các", "Yên Phúc", "Tri Lễ"],
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


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "data/demo/households.csv")
    first = households(int(sys.argv[2]) if len(sys.argv) > 2 else 120)
    write_households_csv(target, first)
    extra = [r for r in supplementary() if r["cccd"] not in {f["cccd"] for f in first}]
    write_households_csv(target.with_name("households_supplementary.csv"), extra)
    print(f"wrote {target} and {target.with_name('households_supplementary.csv')}")
