"""The pages, through HTTP as a browser sends them (forms, cookies, CSRF fields), on the real engine."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date

import httpx
from sqlalchemy import select

from core.stack import BackgroundWeb, free_port
from db.schema import audit_log
from models.household import Step
from operations import reports, sample
from operations.actions import household_state
from tests.conftest import (
    TEST_KEYS_FILE,
    TEST_SIGNING_FILE,
    WEB_DISTRICT,
    enroll,
    make_households,
    password_for,
    take_step,
)

PASSWORD = "mat-khau-trang-2025"


@asynccontextmanager
async def browser(app, sessions, user: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client signed in through the login form, and the pages' CSRF field."""
    await password_for(sessions, user, PASSWORD)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as c:
        yield c, await _sign_in(c, user)


async def _sign_in(c: httpx.AsyncClient, user: str) -> str:
    form = await c.get("/login")
    login_csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    signed = await c.post("/login", data={"user_id": user, "password": PASSWORD, "csrf": login_csrf})
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    home = await c.get("/")
    assert home.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', home.text).group(1)


async def test_a_page_needs_a_session_and_a_login_form_needs_its_token(web):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web["app"]), base_url="https://testserver") as c:
        assert (await c.get("/households")).headers["location"] == "/login"
        forged = await c.post("/login", data={"user_id": "x", "password": "y", "csrf": "made-up"})
        assert "CsrfFailed" in forged.headers["location"]


async def test_a_commune_officer_verifies_with_an_attachment_and_sees_the_refusal_of_a_step_out_of_order(
    web, sessions
):
    h = web["mine"]
    officer = sample.commune_user(WEB_DISTRICT, web["communes"][WEB_DISTRICT])
    async with browser(web["app"], sessions, officer) as (c, csrf):
        queue = await c.get("/households", params={"stage": "verification"})
        assert h.code in queue.text and web["theirs"].code not in queue.text  # another district's is not listed
        page = await c.get(f"/households/{h.code}")
        assert 'name="step" value="verify"' in page.text and 'value="approve"' not in page.text  # only what it may
        scan = b"%PDF-1.4 bien ban xac minh"
        done = await c.post(f"/households/{h.code}/act", data={"csrf": csrf, "step": "verify", "evidence": "BB-01"},
                            files={"files": ("bien-ban.pdf", scan, "application/pdf")})  # fmt: skip
        assert done.status_code == 303 and "message=" in done.headers["location"]
        after = await c.get(done.headers["location"])
        assert "Phê duyệt" in after.text  # now in approval, shown in Vietnamese
        # The district's step, posted by the commune officer anyway: the engine's refusal is on the page.
        refused = await c.post(f"/households/{h.code}/act", data={"csrf": csrf, "step": "approve", "evidence": "x"})
        shown = await c.get(refused.headers["location"])
        assert "RoleNotAllowed" in shown.text and "commune_officer" in shown.text
        stale = await c.post(f"/households/{h.code}/act", data={"csrf": "old", "step": "approve", "evidence": "x"})
        assert stale.status_code == 403 and "CsrfFailed" in stale.text
        other = await c.get(f"/households/{web['theirs'].code}")
        assert "not in your jurisdiction" in other.text and web["theirs"].head_of_household not in other.text
    async with sessions() as s:
        evidence = await s.scalar(select(audit_log.c.evidence).where(audit_log.c.household_code == h.code,
                                                                     audit_log.c.step == "verify"))  # fmt: skip
    assert evidence == ["BB-01", f"bien-ban.pdf sha256:{hashlib.sha256(scan).hexdigest()}"]


async def test_finance_sees_sources_and_an_auditor_reads_a_timeline_in_english(web, sessions):
    async with browser(web["app"], sessions, sample.FINANCE_USERS[0]) as (c, _):
        finance = await c.get("/finance")
        assert finance.status_code == 200 and "NS-TINH" in finance.text
        xlsx = await c.get("/finance/reconciliation.xlsx")
        assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"  # an Excel workbook
    async with browser(web["app"], sessions, sample.AUDITOR_USER) as (c, _):
        await c.get("/lang/en")
        found = await c.get("/audit", params={"code": web["mine"].code})
        timeline = await c.get(found.headers["location"])
        assert "File opened in the engine" in timeline.text and "There is no step you may take now." in timeline.text
        assert (await c.get("/finance")).status_code == 200 and "not for your role" in (await c.get("/finance")).text


async def test_the_stack_serves_the_web_app_as_a_process_of_its_own(client, settings, tmp_path):
    port = free_port()
    web = BackgroundWeb(tmp_path, "127.0.0.1", port)
    env = {"DATABASE_URL": settings.database_url, "TEMPORAL_ADDRESS": client.service_client.config.target_host,
           "PAYLOAD_KEYS_FILE": str(TEST_KEYS_FILE), "STATE_DIR": str(tmp_path), "WEB_PORT": str(port),
           "SIGNING_KEYS_FILE": str(TEST_SIGNING_FILE)}  # fmt: skip
    assert await asyncio.to_thread(web.start, env)
    try:
        async with httpx.AsyncClient(base_url=web.url) as c:
            login = await c.get("/login")
            assert login.status_code == 200 and 'name="password"' in login.text
            assert (await c.get("/openapi.json")).json()["info"]["title"].startswith("Xóa nhà tạm")
    finally:
        assert web.stop()
    assert not web.running()


async def test_a_district_officer_approves_a_selection_in_bulk_and_each_refusal_is_named(web, client, sessions):
    commune = web["communes"][WEB_DISTRICT]
    officer = sample.commune_user(WEB_DISTRICT, commune)
    fresh = make_households(2, district=WEB_DISTRICT, commune=commune, programme="")
    items = await enroll(client, sessions, web["task_queue"], fresh)
    await take_step(client, sessions, items[0].code, Step.VERIFY, officer, evidence=["BB"])
    async with browser(web["app"], sessions, sample.district_user(WEB_DISTRICT)) as (c, csrf):
        done = await c.post("/households/bulk", data={"csrf": csrf, "step": "approve", "evidence": "QĐ-BULK",
                                                      "code": [items[0].code, items[1].code]})  # fmt: skip
        rows = re.findall(r"<tr class=\"(late)?\"><td><a href=\"/households/([^\"]+)\">", done.text)
        assert [(bool(late), code) for late, code in rows] == [(False, items[0].code), (True, items[1].code)]
        assert "OutOfOrder" in done.text  # the second was not verified yet
    assert (await household_state(client, items[0].code)).stage.value == "fund_allocation"
    assert (await household_state(client, items[1].code)).stage.value == "verification"


async def test_an_auditor_runs_the_three_way_check_from_the_page(web, sessions):
    async with browser(web["app"], sessions, sample.AUDITOR_USER) as (c, csrf):
        report = await c.post("/audit/verify", data={"csrf": csrf})
        assert report.status_code == 200
        assert re.search(r"\d+ discrepancies · \d+ steps · \d+ households", report.text)


async def test_the_dashboard_measures_progress_against_the_deadlines(web, sessions):
    async with sessions() as s:
        rows = await reports.deadline_progress(s, date(2025, 5, 10), WEB_DISTRICT)
        everyone = await reports.deadline_progress(s, date(2025, 5, 10))
    names = [r.name for r in rows]
    assert names == ["Sửa chữa nhà hộ người có công, hộ nghèo, cận nghèo", "Nhà ở cho người có công với cách mạng",
                     "Hoàn thành xóa nhà tạm, nhà dột nát"]  # fmt: skip
    repairs, _, whole = rows
    assert repairs.days_left == -10 and whole.days_left == 113
    assert 0 < whole.covered <= everyone[2].covered and repairs.covered <= whole.covered
    async with browser(web["app"], sessions, sample.district_user(WEB_DISTRICT)) as (c, _):
        home = await c.get("/")
        assert "Tiến độ so với các mốc thời hạn" in home.text and "Hoàn thành xóa nhà tạm" in home.text
