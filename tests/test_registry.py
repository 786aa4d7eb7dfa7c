"""Other programmes' lists (issue 19): CCCD matched by keyed hash across programmes, a list refused whole,
a re-import that writes nothing, a match set aside only by an override of a real match, and PostgreSQL
keeping the lists, the keys and the overrides append-only and the lists the owner's to load.

The module runs on a database of its own (`scratch`): it writes audit rows by hand for the overrides to cite,
which the suite's shared database, whose every row an auditor matches to a workflow, must not hold."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import stat
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from cli import keys
from core import matching
from core.errors import Refusal
from db import registry as registry_db
from db import steps
from db.audit import GENESIS
from db.schema import household_match_keys, households, other_programme_beneficiaries, other_programme_lists
from operations import registry, sample
from operations.csv_list import to_csv
from operations.imports import register
from operations.seed import seed_demo
from tests.conftest import make_households

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
FINANCE = sample.FINANCE_USERS[0]


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
async def db(scratch):
    await seed_demo(scratch)
    return scratch


async def _registered(db, n: int = 1):
    """Households registered through the import path (no workflows), keyed as the import will key them."""
    items = make_households(n)
    await register(db, to_csv(items), "test.csv", sample.PROVINCE_USER)
    async with db() as s, s.begin():
        assert await registry.key_households(s, KEY, [(h.code, h.cccd) for h in items]) == n
    return items


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    return ("\n".join(",".join(r) for r in [header, *rows]) + "\n").encode()


async def _audit_row(db, code: str) -> int:
    """A first audit row of the household, as a step writes it (the override cites its step's row)."""
    async with db() as s, s.begin():
        stage = await s.scalar(select(households.c.stage).where(households.c.code == code))
        row = await steps.write(
            s,
            prev_hash=GENESIS,
            audit={
                "household_code": code,
                "seq": 1,
                "idempotency_key": f"test-override-{code}",
                "step": "override_double_support",
                "from_stage": stage,
                "to_stage": stage,
                "actor_user_id": sample.PROVINCE_USER,
                "actor_role": "province_officer",
                "actor_agency": "UBND tỉnh",
                "evidence": ["CV-12/2026"],
                "reason": "supported by CT-135 for a latrine, not a house",
                "amount": None,
                "transfer_id": None,
                "occurred_at": datetime.now(UTC),
            },
            messages=[],
            register={},
        )
    return row.id


# ------------------------------------------------------------------------------------------------ the digest


def test_the_digest_is_stable_keyed_and_blind_to_spacing():
    cccd = "020123456789"
    assert matching.digest(KEY, cccd) == matching.digest(KEY, "0201 2345 6789")
    # What any other programme computes with the shared key: HMAC-SHA256 over the 12 digits, in hex.
    assert matching.digest(KEY, cccd) == hmac.new(KEY, cccd.encode(), hashlib.sha256).hexdigest()
    assert matching.digest(KEY, cccd) != matching.digest(OTHER_KEY, cccd)
    assert matching.digest(KEY, cccd) != matching.digest(KEY, "020123456788")
    with pytest.raises(ValueError, match="leading zero"):
        matching.digest(KEY, "20123456789")
    for bad in ("02012345678a", "0201234567890", ""):
        with pytest.raises(ValueError):
            matching.digest(KEY, bad)
    with pytest.raises(ValueError):
        matching.digest(b"short", cccd)


def test_the_key_file_is_made_owner_only_once_and_read_back(tmp_path: Path):
    path = tmp_path / "match-key"
    assert matching.ensure_key(path)
    assert not matching.ensure_key(path)  # never replaced
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = matching.read_key(path)
    assert len(key) == 32 and matching.read_key(path) == key
    short = tmp_path / "short-key"
    short.write_text("# a comment\nc2hvcnQ\n")
    with pytest.raises(matching.MatchKeyError, match="short-key.*5 bytes"):
        matching.read_key(short)
    with pytest.raises(matching.MatchKeyError, match="missing-key"):
        matching.read_key(tmp_path / "missing-key")


def test_keys_match_key_writes_an_owner_only_key_and_keeps_it(tmp_path: Path):
    path = tmp_path / "match-key"
    runner = CliRunner()
    made = runner.invoke(keys.app, ["match-key", "--file", str(path)])
    assert made.exit_code == 0, made.output
    key = matching.read_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = runner.invoke(keys.app, ["match-key", "--file", str(path)])
    assert again.exit_code == 1 and matching.read_key(path) == key
    forced = runner.invoke(keys.app, ["match-key", "--file", str(path), "--force"])
    assert forced.exit_code == 0 and matching.read_key(path) != key


# ----------------------------------------------------------------------------------------------- the import


async def test_a_plain_list_and_a_hashed_list_both_match_a_registered_household(db, scratch_owner):
    a, b, c = await _registered(db, 3)
    plain = _csv(["Số CCCD", "Năm hỗ trợ", "Ghi chú"], [[a.cccd, "2019", "nhà Đại đoàn kết"], ["079123456789", "", ""]])
    got = await registry.import_list(scratch_owner, plain, "ct135.csv", programme="ct-135", user_id=FINANCE, key=KEY)
    assert (got.programme, got.rows, got.added, got.matched, got.new) == ("CT-135", 2, 2, 1, True)
    hashed = _csv(["cccd_hmac", "year"], [[matching.digest(KEY, b.cccd).upper(), "2021"]])
    got = await registry.import_list(
        scratch_owner, hashed, "nq33.csv", programme="NQ-33", user_id=sample.PROVINCE_USER, key=None
    )
    assert (got.programme, got.rows, got.matched) == ("NQ-33", 1, 1)
    async with db() as s:
        (m,) = await registry_db.open_matches(s, a.code)
        assert (m.programme, m.supported_year, m.note) == ("CT-135", 2019, "nhà Đại đoàn kết")
        assert len(m.file_sha256) == 64
        assert [m.programme for m in await registry_db.open_matches(s, b.code)] == ["NQ-33"]
        assert await registry_db.open_matches(s, c.code) == []
        stored = await s.scalar(select(func.count()).where(other_programme_lists.c.imported_by == FINANCE))
        assert stored >= 1
        # Never the number: only its keyed hash is kept.
        hashes = set(await s.scalars(select(other_programme_beneficiaries.c.cccd_hmac)))
        assert a.cccd not in hashes and matching.digest(KEY, a.cccd) in hashes


async def test_a_bad_row_refuses_the_whole_file_by_line_and_field(db, scratch_owner):
    (h,) = await _registered(db, 1)
    data = _csv(
        ["cccd", "year"],
        [[h.cccd, "2020"], ["20123456789", ""], ["02012345678x", ""], [h.cccd, ""], ["079123456780", "20x0"]],
    )
    async with db() as s:
        before = await s.scalar(select(func.count()).select_from(other_programme_beneficiaries))
    with pytest.raises(registry.ListRefused) as refused:
        await registry.import_list(scratch_owner, data, "bad.csv", programme="CT-134", user_id=FINANCE, key=KEY)
    found = {(p.line, p.field) for p in refused.value.problems}
    assert found == {(3, "cccd"), (4, "cccd"), (5, "cccd"), (6, "year")}
    text = " ".join(str(p) for p in refused.value.problems)
    assert "leading zero lost" in text and "same CCCD as line 2" in text
    hashed = _csv(["cccd_hmac"], [["ab" * 31]])
    with pytest.raises(registry.ListRefused) as refused:
        await registry.import_list(scratch_owner, hashed, "short.csv", programme="CT-134", user_id=FINANCE, key=KEY)
    assert [(p.line, p.field) for p in refused.value.problems] == [(2, "cccd_hmac")]
    with pytest.raises(registry.ListRefused) as refused:
        await registry.import_list(
            scratch_owner, _csv(["name"], [["x"]]), "none.csv", programme="CT-134", user_id=FINANCE, key=KEY
        )
    assert refused.value.problems[0].line == 1
    async with db() as s:
        assert await s.scalar(select(func.count()).select_from(other_programme_beneficiaries)) == before
        assert await registry_db.open_matches(s, h.code) == []


async def test_a_workbook_list_is_read_as_a_list_and_a_lost_zero_named(db, scratch_owner, tmp_path):
    from openpyxl import Workbook

    (h,) = await _registered(db, 1)
    wb = Workbook()
    wb.active.append(["CCCD", "Năm hỗ trợ", "Ghi chú"])
    wb.active.append([h.cccd, 2018, "Quyết định 22"])
    wb.save(tmp_path / "ok.xlsx")
    got = await registry.import_list(
        scratch_owner, (tmp_path / "ok.xlsx").read_bytes(), "ok.xlsx", programme="QD-22", user_id=FINANCE, key=KEY
    )
    assert (got.rows, got.matched) == (1, 1)
    async with db() as s:
        (m,) = await registry_db.open_matches(s, h.code)
    assert (m.programme, m.supported_year) == ("QD-22", 2018)
    wb.active.append([int("020999888777"), 2018, ""])  # Excel read the column as numbers
    wb.save(tmp_path / "lost.xlsx")
    with pytest.raises(registry.ListRefused) as refused:
        await registry.import_list(
            scratch_owner,
            (tmp_path / "lost.xlsx").read_bytes(),
            "lost.xlsx",
            programme="QD-22",
            user_id=FINANCE,
            key=KEY,
        )
    (p,) = refused.value.problems
    assert (p.line, p.field) == (3, "CCCD") and "leading zero lost" in p.message


async def test_a_re_import_is_a_no_op_and_a_plain_list_needs_the_key(db, scratch_owner):
    (h,) = await _registered(db, 1)
    data = _csv(["cccd"], [[h.cccd]])
    first = await registry.import_list(scratch_owner, data, "l.csv", programme="QD-167", user_id=FINANCE, key=KEY)
    again = await registry.import_list(scratch_owner, data, "l-copy.csv", programme="QD-167", user_id=FINANCE, key=KEY)
    assert first.new and not again.new
    assert (again.list_id, again.matched) == (first.list_id, 1)
    assert "already imported" in again.describe("l-copy.csv")
    async with db() as s:
        lists = await s.scalar(select(func.count()).where(other_programme_lists.c.programme == "QD-167"))
    assert lists == 1
    with pytest.raises(Refusal) as e:
        await registry.import_list(scratch_owner, data, "l.csv", programme="QD-168", user_id=FINANCE, key=None)
    assert e.value.rule == "NoMatchKey"


async def test_only_finance_or_list_officers_may_import(db, scratch_owner):
    data = _csv(["cccd"], [["079123456781"]])
    district, communes = next(iter(sample.UNITS.items()))
    officer = sample.commune_user(district, communes[0])
    with pytest.raises(Refusal) as e:
        await registry.import_list(scratch_owner, data, "x.csv", programme="CT-135", user_id=officer, key=KEY)
    assert e.value.rule == "RoleNotAllowed" and "import_roles" in e.value.message
    with pytest.raises(Refusal) as e:
        await registry.import_list(scratch_owner, data, "x.csv", programme="CT 135!", user_id=FINANCE, key=KEY)
    assert e.value.rule == "InvalidProgramme"


# ------------------------------------------------------------------------------------ matches and overrides


async def test_an_override_sets_a_match_aside_and_needs_a_match(db, scratch_owner):
    (h,) = await _registered(db, 1)
    await registry.import_list(
        scratch_owner, _csv(["cccd"], [[h.cccd]]), "m.csv", programme="CT-200", user_id=FINANCE, key=KEY
    )
    audit_id = await _audit_row(db, h.code)
    now = datetime.now(UTC)
    kw = dict(household_code=h.code, audit_id=audit_id, user_id=sample.PROVINCE_USER, at=now)
    async with db() as s, s.begin():
        assert [m.programme for m in await registry_db.open_matches(s, h.code)] == ["CT-200"]
        with pytest.raises(Refusal) as e:
            await registry_db.record_override(s, programme="NQ-99", reason="r", evidence=["e"], **kw)
        assert e.value.rule == "NoMatch"
        with pytest.raises(Refusal) as e:
            await registry_db.record_override(s, programme="CT-200", reason=" ", evidence=["e"], **kw)
        assert e.value.rule == "ReasonMissing"
        with pytest.raises(Refusal) as e:
            await registry_db.record_override(s, programme="CT-200", reason="r", evidence=[], **kw)
        assert e.value.rule == "EvidenceMissing"
        reason = "CT-135 supported a latrine, not a house"
        made = await registry_db.record_override(s, programme="CT-200", reason=reason, evidence=["CV-12"], **kw)
        # The same step recorded again (a retried transaction) returns its override.
        assert await registry_db.record_override(s, programme="CT-200", reason=reason, evidence=["CV-12"], **kw) == made
        assert await registry_db.open_matches(s, h.code) == []
    rows = await registry.report(db, FINANCE, programme="CT-200")
    (row,) = [r for r in rows if r.household_code == h.code]
    assert (row.open, row.overridden_by, row.reason) == (False, sample.PROVINCE_USER, reason)
    assert [r for r in await registry.report(db, FINANCE, open_only=True) if r.household_code == h.code] == []


async def test_an_override_cites_a_step_of_its_own_household(db, scratch_owner):
    x, y = await _registered(db, 2)
    await registry.import_list(
        scratch_owner, _csv(["cccd"], [[x.cccd]]), "n.csv", programme="CT-201", user_id=FINANCE, key=KEY
    )
    other = await _audit_row(db, y.code)
    with pytest.raises(Exception, match="not a step of this household"):
        async with db() as s, s.begin():
            await registry_db.record_override(
                s,
                household_code=x.code,
                programme="CT-201",
                audit_id=other,
                user_id=FINANCE,
                reason="r",
                evidence=["e"],
                at=datetime.now(UTC),
            )


# ------------------------------------------------------------------------------------ keys and the backfill


async def test_the_backfill_keys_the_households_registered_before_once(db, tmp_path):
    items = make_households(3)
    await register(db, to_csv(items), "before.csv", sample.PROVINCE_USER)
    assert await registry.key_all_households(db, KEY) >= 3
    assert await registry.key_all_households(db, KEY) == 0
    async with db() as s:
        keyed = dict(
            (await s.execute(select(household_match_keys.c.household_code, household_match_keys.c.cccd_hmac))).all()
        )
    assert all(keyed[h.code] == matching.digest(KEY, h.cccd) for h in items)
    out = tmp_path / "keys.csv"
    count = await registry.export_keys(db, FINANCE, out)
    lines = out.read_text().splitlines()
    assert lines[0] == "cccd_hmac" and len(lines) == count + 1
    assert matching.digest(KEY, items[0].cccd) in lines and items[0].cccd not in out.read_text()


# -------------------------------------------------------------------------------------- what PostgreSQL keeps


async def test_the_tables_are_append_only_and_the_lists_the_owners(db, scratch_owner, scratch_settings):
    (h,) = await _registered(db, 1)
    await registry.import_list(
        scratch_owner, _csv(["cccd"], [[h.cccd]]), "p.csv", programme="CT-202", user_id=FINANCE, key=KEY
    )
    audit_id = await _audit_row(db, h.code)
    async with db() as s, s.begin():
        await registry_db.record_override(
            s,
            household_code=h.code,
            programme="CT-202",
            audit_id=audit_id,
            user_id=FINANCE,
            reason="r",
            evidence=["e"],
            at=datetime.now(UTC),
        )
    owner = await asyncpg.connect(_dsn(scratch_settings.owner_asyncpg_url))
    app = await asyncpg.connect(_dsn(scratch_settings.asyncpg_url))
    try:
        for table, column in (
            ("other_programme_lists", "name"),
            ("other_programme_beneficiaries", "note"),
            ("household_match_keys", "cccd_hmac"),
            ("double_support_overrides", "reason"),
        ):
            for sql in (f"UPDATE {table} SET {column} = {column}", f"DELETE FROM {table}", f"TRUNCATE {table} CASCADE"):
                with pytest.raises(asyncpg.PostgresError, match="append-only"):
                    await owner.execute(sql)  # the owner too: the triggers refuse it
            for sql in (f"UPDATE {table} SET {column} = {column}", f"DELETE FROM {table}"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await app.execute(sql)
        for sql in (
            "INSERT INTO other_programme_beneficiaries (list_id, programme, cccd_hmac) "
            "SELECT id, programme, repeat('a', 64) FROM other_programme_lists LIMIT 1",
            "INSERT INTO other_programme_lists (programme, file_name, file_sha256, row_count, imported_by) "
            f"VALUES ('X-1', 'x', repeat('a', 64), 1, '{FINANCE}')",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await app.execute(sql)
        assert await app.fetchval("SELECT count(*) FROM other_programme_beneficiaries") >= 1  # it reads them
    finally:
        await asyncio.gather(owner.close(), app.close())
