"""Approved-list import: every problem named by line and field, nothing half-imported, re-import is safe."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from core.errors import Refusal
from core.settings import ROOT
from db.schema import households, import_batches
from models.household import workflow_id_for
from operations import sample
from operations.csv_list import ALL_COLUMNS, parse
from operations.imports import ImportRejected, import_file, register
from tests.conftest import make_households, to_csv, token_for, wait_until


def _rows(n=3, **overrides) -> list[dict]:
    return [h.model_dump(mode="json") | overrides for h in make_households(n)]


async def _count(sessions, codes) -> int:
    async with sessions() as s:
        return await s.scalar(select(func.count()).where(households.c.code.in_(codes)))


async def _rejected(sessions, rows_or_bytes) -> list[str]:
    data = rows_or_bytes if isinstance(rows_or_bytes, bytes) else to_csv(rows_or_bytes)
    with pytest.raises(ImportRejected) as caught:
        await register(sessions, data, "bad.csv", sample.PROVINCE_USER)
    return [str(p) for p in caught.value.problems]


async def test_bad_fields_are_named_by_line_and_nothing_is_imported(sessions):
    rows = _rows(4)
    rows[1]["cccd"] = "12345678901"  # 11 digits
    rows[2]["beneficiary_group"] = "rich"
    rows[3]["head_of_household"] = ""
    problems = await _rejected(sessions, rows)
    # Each problem once, in the file's order, naming line, field and the value found.
    assert [p.split(": ", 1)[0] for p in problems] == [
        "line 3, field cccd",
        "line 4, field beneficiary_group",
        "line 5, field head_of_household",
    ]
    assert [p.rsplit(" (got ", 1)[1] for p in problems] == ["'12345678901')", "'rich')", "'')"]
    assert "'poor'" in problems[1]  # the values it would take
    assert await _count(sessions, [r["code"] for r in rows]) == 0, "the good row must not be imported either"


async def test_a_missing_column_is_named(sessions):
    data = to_csv(_rows(1)).replace(b",decision_ref", b",decision")
    assert await _rejected(sessions, data) == ["line 1, field decision_ref: column is missing from the header"]


async def test_duplicates_within_the_file_are_refused(sessions):
    rows = _rows(3)
    rows[2]["code"] = rows[0]["code"]
    rows[1]["cccd"] = rows[0]["cccd"]
    problems = await _rejected(sessions, rows)
    assert f"line 3, field cccd: {rows[0]['cccd']} duplicates line 2" in problems
    assert f"line 4, field code: {rows[0]['code']} duplicates line 2" in problems


async def test_duplicates_of_registered_households_are_refused(sessions):
    first = _rows(2)
    await register(sessions, to_csv(first), "first.csv", sample.PROVINCE_USER)
    again = _rows(2)
    again[0]["cccd"] = first[0]["cccd"]  # a registered person under a new code
    again[1] = first[1] | {"support_type": "repair" if first[1]["support_type"] == "new_build" else "new_build"}
    problems = await _rejected(sessions, again)
    assert problems == [
        f"line 2, field cccd: {first[0]['cccd']} is already registered to household {first[0]['code']}",
        f"line 3, field code: {first[1]['code']} is already registered with different support_type",
    ]


async def test_rows_outside_the_importers_jurisdiction_are_refused(sessions):
    rows = _rows(2, district="Hữu Lũng", commune="Yên Thịnh")
    rows[1] |= {"district": "Bắc Sơn", "commune": "Vũ Lễ"}
    data = to_csv(rows)
    with pytest.raises(ImportRejected) as caught:
        await register(sessions, data, "x.csv", sample.district_user("Hữu Lũng"))
    assert [str(p).split(":")[0] for p in caught.value.problems] == ["line 3, field district"]
    with pytest.raises(Refusal) as denied:
        await register(sessions, data, "x.csv", sample.commune_user("Hữu Lũng", "Yên Thịnh"))
    assert denied.value.rule == "RoleNotAllowed"


def test_vietnamese_terms_and_excel_bom_are_accepted():
    row = _rows(1)[0] | {"beneficiary_group": "Hộ cận nghèo", "support_type": "sửa chữa"}
    data = "\ufeff".encode() + to_csv([row])
    parsed, problems = parse(data)
    assert problems == []
    assert (parsed[0].household.beneficiary_group.value, parsed[0].household.support_type.value) == (
        "near_poor",
        "repair",
    )


async def test_importing_the_same_list_twice_starts_nothing_twice(client, sessions, task_queue, tmp_csv):
    items = make_households(5)
    tmp_csv.write_bytes(to_csv(items))
    first = await import_file(sessions, client, task_queue, tmp_csv, sample.PROVINCE_USER)
    second = await import_file(sessions, client, task_queue, tmp_csv, sample.PROVINCE_USER)
    assert (first.registered, first.workflows_started, first.workflows_existing) == (5, 5, 0)
    assert (second.registered, second.unchanged, second.workflows_started, second.workflows_existing) == (0, 5, 0, 5)
    for h in items:  # every household, not the first only: one run each (visibility catches up, never to two)
        wid = workflow_id_for(h.code)
        runs = await wait_until(lambda wid=wid: _runs(client, wid))
        assert runs == [wid], h.code
    async with sessions() as s:
        assert (
            await s.scalar(
                select(func.count())
                .select_from(import_batches)
                .where(import_batches.c.file_name == tmp_csv.name, import_batches.c.id == first.batch_id)
            )
            == 1
        )
        assert await s.scalar(select(func.count()).where(households.c.import_batch_id == first.batch_id)) == 5
    assert second.batch_id is None  # the second import wrote no batch


async def _runs(client, wid: str) -> list[str]:
    return [w.id async for w in client.list_workflows(f"WorkflowId='{wid}'")]


async def test_the_command_line_reports_a_bad_file_and_exits_non_zero(settings, sessions, tmp_csv):
    rows = _rows(2)
    rows[0]["cccd"] = "0201ABC"
    tmp_csv.write_bytes(to_csv(rows))
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "TEMPORAL_ADDRESS": "127.0.0.1:1",
        "COLUMNS": "200",
        "PAYLOAD_KEYS_FILE": str(settings.payload_keys_path),
        "HOUSING_TOKEN": await token_for(sessions, sample.PROVINCE_USER),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "starter.py"), "import", str(tmp_csv), "--as", sample.PROVINCE_USER],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "rejected" in done.stderr and "nothing was imported" in done.stderr
    assert "line 2, field cccd" in done.stderr


def test_columns_match_the_household_model():
    from models.household import Household

    assert set(ALL_COLUMNS) == set(Household.model_fields)
