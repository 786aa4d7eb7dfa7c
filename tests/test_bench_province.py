"""The province generator for the benchmarks: Lạng Sơn's figures, deterministic, and importable as is."""

from __future__ import annotations

from collections import Counter

from bench.province import lang_son, write
from operations import sample
from operations.csv_list import parse


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
