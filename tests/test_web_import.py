"""Importing a list from the web: upload, a preview that writes nothing, a confirmation that re-reads the held
file, registers it signed and starts its workflows as the command line does; only the policy's importers."""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata

import openpyxl
from sqlalchemy import func, select

from core.signing import Unauthenticated
from db import households as households_db
from db import signing_keys
from db.schema import households
from models.assertion import OFFICERS, ActionAssertion
from models.household import Household
from operations import sample
from operations.actions import household_state
from operations.csv_list import VIETNAMESE
from operations.imports import IMPORT_STEP, IMPORTS, import_digest
from tests.conftest import WEB_DISTRICT, make_households, wait_until
from tests.test_list_files import cp1258
from tests.test_web_pages import browser

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
GROUP = {"meritorious": "Người có công", "poor": "Hộ nghèo", "near_poor": "Hộ cận nghèo", "disaster": "Thiên tai"}
GROUP |= {"other": "Khác"}
SUPPORT = {"new_build": "Xây mới", "repair": "Sửa chữa"}
COLUMNS = ("code", "head_of_household", "cccd", "province", "district", "commune")
COLUMNS += ("beneficiary_group", "support_type", "decision_ref")


def vietnamese_rows(items: list[Household], nfd: bool = False) -> list[list[str]]:
    """The list as an officer types it: Vietnamese headers and terms (NFD, as a Mac keyboard gives, if asked)."""
    out = [[VIETNAMESE[c] for c in COLUMNS]]
    for h in items:
        d = h.model_dump(mode="json")
        d["beneficiary_group"], d["support_type"] = GROUP[d["beneficiary_group"]], SUPPORT[d["support_type"]]
        out.append([unicodedata.normalize("NFD", d[c]) if nfd else d[c] for c in COLUMNS])
    return out


async def _count(sessions, codes) -> int:
    async with sessions() as s:
        return await s.scalar(select(func.count()).where(households.c.code.in_(codes)))


def _sha(page: str) -> str:
    return re.search(r'name="sha256" value="([0-9a-f]{64})"', page).group(1)


async def test_a_windows_1258_list_is_previewed_without_writing_then_confirmed_signed_and_started(web, sessions):
    items = make_households(3, district=WEB_DISTRICT, commune=web["communes"][WEB_DISTRICT], programme="")
    data = cp1258("".join(";".join(r) + "\r\n" for r in vietnamese_rows(items)))
    async with browser(web["app"], sessions, sample.PROVINCE_USER) as (c, csrf):
        form = await c.get("/imports")
        assert form.status_code == 200 and 'href="/imports/template.xlsx"' in form.text
        preview = await c.post(
            "/imports/preview", data={"csrf": csrf}, files={"file": ("danh-sach.csv", data, "text/csv")}
        )
        assert preview.status_code == 200, preview.text
        assert all(h.code in preview.text for h in items) and 'action="/imports/confirm"' in preview.text
        assert _sha(preview.text) == hashlib.sha256(data).hexdigest()
        assert await _count(sessions, [h.code for h in items]) == 0, "a preview writes nothing"

        done = await c.post("/imports/confirm", data={"csrf": csrf, "sha256": _sha(preview.text)})
        assert done.status_code == 200, done.text
        assert "3 households — 3 registered" in done.text
        again = await c.post("/imports/confirm", data={"csrf": csrf, "sha256": _sha(preview.text)})
        assert again.status_code == 409 and "UploadMissing" in again.text  # held once, confirmed once
    client = web["app"].state.client
    for h in items:
        state = await wait_until(lambda h=h: _state(client, h.code))
        assert state.stage.value == "verification"
    async with sessions() as s:
        batch_id = await s.scalar(select(households.c.import_batch_id).where(households.c.code == items[0].code))
        batch = await households_db.import_batch(s, batch_id)
        keys = await signing_keys.load(s)
    assert (batch["file_name"], batch["row_count"], batch["imported_by"]) == ("danh-sach.csv", 3, sample.PROVINCE_USER)
    assert batch["file_sha256"] == hashlib.sha256(data).hexdigest()
    signed = ActionAssertion.model_validate(batch["assertion"])
    covered = dict(
        file_name=batch["file_name"],
        file_sha256=batch["file_sha256"],
        row_count=batch["row_count"],
        imported_by=batch["imported_by"],
    )
    check = dict(workflow_id=IMPORTS, step=IMPORT_STEP, user_id=sample.PROVINCE_USER, holder=OFFICERS)
    keys.verify(signed, input_digest=import_digest(**covered), now=signed.issued_at, **check)
    try:
        keys.verify(signed, input_digest=import_digest(**covered | {"row_count": 4}), now=signed.issued_at, **check)
        raise AssertionError("an assertion over another batch verified")
    except Unauthenticated:
        pass


async def _state(client, code):
    try:
        return await household_state(client, code)
    except Exception:
        return None


async def test_an_nfd_typed_xlsx_filled_from_the_template_reaches_the_commune_officers_queue(web, sessions):
    commune = web["communes"][WEB_DISTRICT]
    items = make_households(2, district=WEB_DISTRICT, commune=commune, programme="")
    async with browser(web["app"], sessions, sample.PROVINCE_USER) as (c, csrf):
        template = await c.get("/imports/template.xlsx")
        assert template.status_code == 200 and template.headers["content-type"] == XLSX
        wb = openpyxl.load_workbook(io.BytesIO(template.content))
        ws = wb.worksheets[0]
        header = [cell.value for cell in ws[1]]
        for n, row in enumerate(vietnamese_rows(items, nfd=True)[1:], start=2):  # over the example row
            for name, value in zip(vietnamese_rows([])[0], row, strict=True):
                ws.cell(row=n, column=header.index(name) + 1, value=value)
        buf = io.BytesIO()
        wb.save(buf)
        preview = await c.post(
            "/imports/preview", data={"csrf": csrf}, files={"file": ("danh sách.xlsx", buf.getvalue(), XLSX)}
        )
        assert preview.status_code == 200, preview.text
        done = await c.post("/imports/confirm", data={"csrf": csrf, "sha256": _sha(preview.text)})
        assert done.status_code == 200 and "2 registered" in done.text
    async with sessions() as s:
        stored = await s.scalar(select(households.c.commune).where(households.c.code == items[0].code))
    assert stored == commune == unicodedata.normalize("NFC", commune) != unicodedata.normalize("NFD", commune)
    officer = sample.commune_user(WEB_DISTRICT, commune)
    await wait_until(lambda: _state(web["app"].state.client, items[1].code))
    async with browser(web["app"], sessions, officer) as (c, _):
        queue = await c.get("/households", params={"stage": "verification"})
        assert all(h.code in queue.text for h in items)


async def test_the_preview_names_problems_by_line_and_field_and_writes_nothing(web, sessions, settings):
    items = make_households(3, district=WEB_DISTRICT, commune=web["communes"][WEB_DISTRICT], programme="")
    rows = vietnamese_rows(items)
    rows[1][2] = rows[1][2][1:]  # the CCCD as Excel leaves it: 11 digits
    rows[3][1] = "Hà Văn\u202e Hùng"
    data = "".join(",".join(r) + "\n" for r in rows).encode()
    async with browser(web["app"], sessions, sample.PROVINCE_USER) as (c, csrf):
        preview = await c.post("/imports/preview", data={"csrf": csrf}, files={"file": ("ds.csv", data, "text/csv")})
    assert preview.status_code == 422
    text = preview.text
    assert "leading zero lost" in text and "U+202E" in text
    assert re.search(r"<td class=\"num\">2</td><td>Số CCCD</td>", text)
    assert re.search(r"<td class=\"num\">4</td><td>Họ tên chủ hộ</td>", text)
    assert 'action="/imports/confirm"' not in text
    assert await _count(sessions, [h.code for h in items]) == 0
    held = settings.state_dir / "imports"
    assert not held.exists() or not any(p.name.startswith(hashlib.sha256(data).hexdigest()) for p in held.iterdir())


async def test_the_confirmation_reads_the_held_file_again_and_refuses_a_changed_one(web, sessions, settings):
    items = make_households(1, district=WEB_DISTRICT, commune=web["communes"][WEB_DISTRICT], programme="")
    data = "".join(",".join(r) + "\n" for r in vietnamese_rows(items)).encode()
    async with browser(web["app"], sessions, sample.PROVINCE_USER) as (c, csrf):
        preview = await c.post("/imports/preview", data={"csrf": csrf}, files={"file": ("a.csv", data, "text/csv")})
        digest = _sha(preview.text)
        folder = settings.state_dir / "imports"
        (held,) = [p for p in folder.iterdir() if p.name.startswith(digest) and not p.name.endswith(".json")]
        assert held.stat().st_mode & 0o777 == 0o600
        held.write_bytes(data.replace(items[0].code.encode(), b"ZZZ-9"))  # changed on disk after the preview
        changed = await c.post("/imports/confirm", data={"csrf": csrf, "sha256": digest})
        assert changed.status_code == 409 and "UploadMissing" in changed.text
        forged = await c.post("/imports/confirm", data={"csrf": csrf, "sha256": "../" + digest[3:]})
        assert "InvalidInput" in forged.text
        stale = await c.post("/imports/confirm", data={"csrf": "not-the-form", "sha256": digest})
        assert stale.status_code == 403 and "CsrfFailed" in stale.text
    assert await _count(sessions, [items[0].code, "ZZZ-9"]) == 0


async def test_a_commune_officer_may_not_import(web, sessions):
    officer = sample.commune_user(WEB_DISTRICT, web["communes"][WEB_DISTRICT])
    items = make_households(1, district=WEB_DISTRICT, commune=web["communes"][WEB_DISTRICT], programme="")
    data = "".join(",".join(r) + "\n" for r in vietnamese_rows(items)).encode()
    async with browser(web["app"], sessions, officer) as (c, csrf):
        home = await c.get("/")
        assert 'href="/imports"' not in home.text
        assert "không dành cho vai trò" in (await c.get("/imports")).text
        refused = await c.post("/imports/preview", data={"csrf": csrf}, files={"file": ("a.csv", data, "text/csv")})
        assert refused.status_code == 403 and "RoleNotAllowed" in refused.text
        confirm = await c.post("/imports/confirm", data={"csrf": csrf, "sha256": hashlib.sha256(data).hexdigest()})
        assert confirm.status_code == 403 and "RoleNotAllowed" in confirm.text
    assert await _count(sessions, [items[0].code]) == 0


async def test_the_command_line_imports_an_xlsx_signed_for_the_officer_running_it(client, settings, sessions, tmp_path):
    """The other front door: `starter.py import` reads the workbook and signs the batch as `--as` proved."""
    import asyncio
    import os
    import subprocess
    import sys

    from core.settings import ROOT
    from tests.conftest import TEST_KEYS_FILE, TEST_SIGNING_FILE, token_for

    items = make_households(2, district=WEB_DISTRICT, commune="Tú Mịch", programme="")
    wb = openpyxl.Workbook()
    for row in vietnamese_rows(items):
        wb.active.append(row)
    path = tmp_path / "danh-sach.xlsx"
    wb.save(path)
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_TASK_QUEUE": f"cli-import-{os.getpid()}",  # no worker: the workflows wait, untouched
        "PAYLOAD_KEYS_FILE": str(TEST_KEYS_FILE),
        "SIGNING_KEYS_FILE": str(TEST_SIGNING_FILE),
        "STATE_DIR": str(tmp_path / "state"),
        "HOUSING_TOKEN": await token_for(sessions, sample.PROVINCE_USER),
    }
    env.pop("SIGNING_KEYS", None)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "starter.py"), "import", str(path), "--as", sample.PROVINCE_USER],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "2 households — 2 registered" in done.stdout
    async with sessions() as s:
        batch_id = await s.scalar(select(households.c.import_batch_id).where(households.c.code == items[0].code))
        batch = await households_db.import_batch(s, batch_id)
        keys = await signing_keys.load(s)
    signed = ActionAssertion.model_validate(batch["assertion"])
    covered = {k: batch[k] for k in ("file_name", "file_sha256", "row_count", "imported_by")}
    assert covered["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    keys.verify(
        signed,
        workflow_id=IMPORTS,
        step=IMPORT_STEP,
        input_digest=import_digest(**covered),
        user_id=sample.PROVINCE_USER,
        holder=OFFICERS,
        now=signed.issued_at,
    )


async def test_what_only_the_register_knows_is_found_at_confirmation_and_nothing_is_written(web, sessions):
    items = make_households(2, district=WEB_DISTRICT, commune=web["communes"][WEB_DISTRICT], programme="")
    first = "".join(",".join(r) + "\n" for r in vietnamese_rows(items[:1])).encode()
    taken = items[1].model_copy(update={"cccd": items[0].cccd})  # a registered person under a new code
    second = "".join(",".join(r) + "\n" for r in vietnamese_rows([taken])).encode()
    async with browser(web["app"], sessions, sample.PROVINCE_USER) as (c, csrf):
        for data, status in ((first, 200), (second, 422)):
            preview = await c.post("/imports/preview", data={"csrf": csrf}, files={"file": ("a.csv", data, "text/csv")})
            assert preview.status_code == 200, preview.text
            done = await c.post("/imports/confirm", data={"csrf": csrf, "sha256": _sha(preview.text)})
            assert done.status_code == status, done.text
    assert f"is already registered to household {items[0].code}" in done.text
    assert await _count(sessions, [items[1].code]) == 0
