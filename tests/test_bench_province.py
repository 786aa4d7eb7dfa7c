"""The province generator for the benchmarks: Lạng Sơn's figures, deterministic, and importable as is."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import date

from bench.driver import province_items
from bench.province import DECISION_270, lang_son, write
from operations import reports, sample
from operations.csv_list import parse, to_csv
from operations.imports import register
from operations.seed import seed_demo


def test_lang_son_has_decision_270s_figures_and_the_supplementary_list_completes_the_province():
    p = lang_son()
    main = Counter(r["support_type"] for r in p.main)
    total = Counter(r["support_type"] for r in p.all)
    assert (len(p.main), main["new_build"], main["repair"]) == (4405, 3079, 1326)
    assert (len(p.all), total["new_build"], total["repair"]) == (6508, 3840, 2668)
    assert sum(60_000_000 if r["support_type"] == "new_build" else 30_000_000 for r in p.main) == 224_520_000_000
    assert {r["decision_ref"] for r in p.supplementary} == {sample.SUPPLEMENTARY_DECISION}
    assert {r["district"] for r in p.all} == set(sample.UNITS)  # all 11 units
    assert len({r["code"] for r in p.all}) == len({r["cccd"] for r in p.all}) == 6508
    groups = Counter(r["beneficiary_group"] for r in p.all)
    assert set(groups) == set(sample.GROUP_WEIGHTS) and groups["poor"] > groups["other"]


def test_the_same_seed_gives_the_same_files_and_they_import_cleanly(tmp_path):
    first = write(lang_son(7), tmp_path / "a")
    assert write(lang_son(7), tmp_path / "b") == first
    assert write(lang_son(8), tmp_path / "c") != first
    for name in first:
        rows, problems = parse((tmp_path / "a" / name).read_bytes())
        assert problems == [] and len(rows) in (4405, 2103)


async def test_the_report_shows_decision_270s_houses_and_support(scratch):
    """Decision 270's list imported into a database of this module's own (4,405 households in the suite's
    shared one would change what other tests' lists and pages show): the report's row for it holds 3,079 new
    builds, 1,326 repairs and 224,520,000,000 đồng of support."""
    sessions = scratch
    await seed_demo(sessions)
    ref = f"270-{uuid.uuid4().hex[:6]}/QĐ-UBND"
    items = [
        h.model_copy(update={"decision_ref": ref})
        for h in province_items(2025, DECISION_270["count"], f"R{uuid.uuid4().hex[:4].upper()}")
    ]
    _, registered, _ = await register(sessions, to_csv(items), "lang-son-270.csv", sample.PROVINCE_USER)
    assert len(registered) == 4405
    async with sessions() as s:
        rows = {r.decision_ref: r for r in await reports.by_decision(s, date(2025, 6, 1))}
    assert rows[ref] == reports.DecisionRow(
        ref, households=4405, new_builds=3079, repairs=1326, entitled=224_520_000_000, reserved=0, paid=0
    )


def test_the_demo_names_the_provinces_it_can_generate_and_starts_nothing(tmp_path):
    env = {**os.environ, "STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "starter.py", "demo", "--province", "atlantis"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1 and "--province 'atlantis': this build generates 'lang-son'" in done.stderr
    assert not (tmp_path / "state" / "pg").exists()
