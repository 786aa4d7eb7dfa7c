"""A province shaped like Lạng Sơn 2025, generated deterministically: the same seed gives the same files.

    python -m bench.province OUT_DIR [--seed 2025]

Decision 270/QĐ-UBND: 4,405 houses, 3,079 new builds and 1,326 repairs. The supplementary list brings the
province to 6,508 houses, 3,840 new and 2,668 repairs, so it holds 2,103 houses: 761 new and 1,342 repairs.
Households are spread over the 11 units and their communes, with beneficiary groups weighted as in the
sample data and national-target-programme membership for most poor and near-poor households. Codes and
CCCD numbers are unique across both lists.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path

from operations import sample

DECISION_270 = {"count": 4405, "new_builds": 3079, "repairs": 1326}
PROVINCE_TOTAL = {"count": 6508, "new_builds": 3840, "repairs": 2668}
SUPPLEMENTARY = {k: PROVINCE_TOTAL[k] - DECISION_270[k] for k in PROVINCE_TOTAL}  # 2,103: 761 new, 1,342 repairs
SUPPORT = {"new_build": 60_000_000, "repair": 30_000_000}


@dataclass(frozen=True)
class Province:
    main: list[dict]
    supplementary: list[dict]

    @property
    def all(self) -> list[dict]:
        return self.main + self.supplementary


def lang_son(seed: int = 2025) -> Province:
    main = sample.households(DECISION_270["count"], seed=seed, prefix="LS270", new_builds=DECISION_270["new_builds"])
    extra = sample.households(
        SUPPLEMENTARY["count"],
        seed=seed + 1,
        prefix="LS1520",
        decision=sample.SUPPLEMENTARY_DECISION,
        new_builds=SUPPLEMENTARY["new_builds"],
    )
    taken = {r["cccd"] for r in main}
    for row in extra:
        # The two lists are drawn from separate seeds; a CCCD drawn twice is moved to the next free number.
        while row["cccd"] in taken:
            row["cccd"] = f"{row['cccd'][:6]}{(int(row['cccd'][6:]) + 1) % 10**6:06d}"
        taken.add(row["cccd"])
    return Province(main, extra)


def write(province: Province, out: Path) -> dict[str, str]:
    """Write the two lists as CSV (UTF-8 with BOM, for Excel); return each file's SHA-256."""
    files = {"households.csv": province.main, "households_supplementary.csv": province.supplementary}
    digests = {}
    for name, rows in files.items():
        sample.write_households_csv(out / name, rows)
        digests[name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    return digests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=2025)
    args = ap.parse_args()
    province = lang_son(args.seed)
    for name, digest in write(province, args.out).items():
        print(f"{name}: sha256 {digest}")
    for label, rows in (("270/QĐ-UBND", province.main), (sample.SUPPLEMENTARY_DECISION, province.supplementary)):
        new = sum(r["support_type"] == "new_build" for r in rows)
        amount = sum(SUPPORT[r["support_type"]] for r in rows)
        print(f"{label}: {len(rows):,} households, {new:,} new builds, {len(rows) - new:,} repairs, {amount:,} đồng")


if __name__ == "__main__":
    main()
