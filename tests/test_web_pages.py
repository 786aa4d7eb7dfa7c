"""The pages, through HTTP as a browser sends them (forms, cookies, CSRF fields), on the real engine."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, timedelta

import httpx
import openpyxl
from sqlalchemy import select

from auditor.live import verify_live
from core.formatting import today
from db.schema import audit_log, households, programme_deadlines
from models.actor import Jurisdiction
from models.household import Step
from operations import reports, sample
from operations.actions import household_state
from operations.csv_list import to_csv
from operations.imports import register, start_workflows
from runtime.stack import BackgroundWeb, free_port
from tests.conftest import (
    FINDINGS_FORM,
    TEST_KEYS_FILE,
    TEST_SIGNING_FILE,
    WEB_DISTRICT,
    enroll,
    make_households,
    password_for,
    post_list,
    take_step,
)

PASSWORD = "mat-khau-trang-2025"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


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
    web, client, sessions
):
    officer = sample.commune_user(WEB_DISTRICT, web["communes"][WEB_DISTRICT])
    fresh = make_households(1, district=WEB_DISTRICT, commune=web["communes"][WEB_DISTRICT], programme="")
    (h,) = await enroll(client, sessions, web["task_queue"], fresh)  # its own: `mine` is not moved on
    async with browser(web["app"], sessions, officer) as (c, csrf):
        queue = await c.get("/households", params={"stage": "verification"})
        assert h.code in queue.text and web["theirs"].code not in queue.text  # another district's is not listed
        page = await c.get(f"/households/{h.code}")
        assert 'name="step" value="verify"' in page.text and 'value="approve"' not in page.text  # only what it may
        assert 'name="roof"' in page.text and 'name="floor_area_m2"' in page.text  # what the review found
        scan = b"%PDF-1.4 bien ban xac minh"
        done = await c.post(
            f"/households/{h.code}/act",
            data={"csrf": csrf, "step": "verify", "evidence": "BB-01", **FINDINGS_FORM},
            files={"files": ("bien-ban.pdf", scan, "application/pdf")},
        )
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
        evidence = await s.scalar(
            select(audit_log.c.evidence).where(audit_log.c.household_code == h.code, audit_log.c.step == "verify")
        )
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
    env = {
        "DATABASE_URL": settings.database_url,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "PAYLOAD_KEYS_FILE": str(TEST_KEYS_FILE),
        "STATE_DIR": str(tmp_path),
        "WEB_PORT": str(port),
        "SIGNING_KEYS_FILE": str(TEST_SIGNING_FILE),
    }
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
    await post_list(client, sessions, items[0].code)
    async with browser(web["app"], sessions, sample.district_user(WEB_DISTRICT)) as (c, csrf):
        done = await c.post(
            "/households/bulk",
            data={"csrf": csrf, "step": "approve", "evidence": "QĐ-BULK", "code": [items[0].code, items[1].code]},
        )
        rows = re.findall(r"<tr class=\"(late)?\"><td><a href=\"/households/([^\"]+)\">", done.text)
        assert [(bool(late), code) for late, code in rows] == [(False, items[0].code), (True, items[1].code)]
        assert "OutOfOrder" in done.text  # the second was not verified yet
    assert (await household_state(client, items[0].code)).stage.value == "fund_allocation"
    assert (await household_state(client, items[1].code)).stage.value == "verification"


async def test_an_auditor_runs_the_three_way_check_from_the_page(web, client, sessions, settings):
    """The page shows exactly the report `verify_live` gives on the same records, and a known discrepancy: a
    household registered from a list whose workflow was never started (its history is nowhere)."""
    fresh = make_households(1, district=WEB_DISTRICT, commune=web["communes"][WEB_DISTRICT], programme="")
    listed, registered, current = await register(sessions, to_csv(fresh), "test.csv", sample.PROVINCE_USER)
    (h,) = registered
    try:
        async with browser(web["app"], sessions, sample.AUDITOR_USER) as (c, csrf):
            page = await c.post("/audit/verify", data={"csrf": csrf})
        report, _ = await verify_live(client, sessions, settings, client.data_converter)
    finally:  # the household's workflow started after all, so that no later check finds it missing
        await start_workflows(client, web["task_queue"], registered, current, importers=listed.importers)
    assert page.status_code == 200
    counts = f"{len(report.discrepancies)} discrepancies · {report.transitions} steps · {report.households} households"
    assert f'<p class="error">{counts}</p>' in page.text
    shown = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>", page.text)
    assert shown == [(d.kind, d.household) for d in report.discrepancies[:200]]
    assert [d.detail for d in report.discrepancies if d.household == h.code] == [
        "registered, but its workflow history is neither on the Temporal server nor in the archive"
    ]
    assert ("history_missing", h.code) in shown
    # Started, its history is found: the check on this household alone is clean.
    again, _ = await verify_live(client, sessions, settings, client.data_converter, [h.code])
    assert again.discrepancies == [] and again.households == 1


async def test_the_dashboard_measures_progress_against_the_deadlines(web, sessions):
    async with sessions() as s:
        rows = await reports.deadline_progress(
            s, date(2025, 5, 10), Jurisdiction(province=sample.PROVINCE, district=WEB_DISTRICT)
        )
        everyone = await reports.deadline_progress(s, date(2025, 5, 10))
    names = [r.name for r in rows]
    assert names == [
        "Sửa chữa nhà hộ người có công, hộ nghèo, cận nghèo",
        "Nhà ở cho người có công với cách mạng",
        "Hoàn thành xóa nhà tạm, nhà dột nát",
    ]
    repairs, _, whole = rows
    assert repairs.days_left == -10 and whole.days_left == 113
    # Counted again here, row by row, from the register and the deadlines' own terms: (covered, closed).
    async with sessions() as s:
        h, d = households.c, programme_deadlines.c
        register_rows = (await s.execute(select(h.district, h.support_type, h.beneficiary_group, h.stage))).all()
        terms = (await s.execute(select(d.support_types, d.beneficiary_groups).order_by(d.due_on))).all()

    def counted(district: str | None) -> list[tuple[int, int]]:
        out = []
        for types, groups in terms:
            hit = [
                r
                for r in register_rows
                if r.stage != "cancelled"
                and district in (None, r.district)
                and (types is None or r.support_type in types)
                and (groups is None or r.beneficiary_group in groups)
            ]
            out.append((len(hit), sum(r.stage == "closed" for r in hit)))
        return out

    assert [(r.covered, r.closed) for r in rows] == counted(WEB_DISTRICT)
    assert [(r.covered, r.closed) for r in everyone] == counted(None)
    assert whole.covered > 0  # the web fixture's own household is in the district
    async with browser(web["app"], sessions, sample.district_user(WEB_DISTRICT)) as (c, _):
        home = await c.get("/")
        assert "Tiến độ so với các mốc thời hạn" in home.text and "Hoàn thành xóa nhà tạm" in home.text
    shown = re.findall(r'<td class="num">(\d+) / (\d+) ', home.text)  # "closed / covered" of each deadline
    assert shown == [(str(closed), str(covered)) for covered, closed in counted(WEB_DISTRICT)]


async def test_every_page_carries_the_security_headers_and_no_inline_script_or_style(web, sessions):
    officer = sample.commune_user(WEB_DISTRICT, web["communes"][WEB_DISTRICT])
    async with browser(web["app"], sessions, officer) as (c, _):
        pages = ("/", "/households", f"/households/{web['mine'].code}", "/receipts", "/grievances", "/login")
        for path in (*pages, "/static/app.css"):
            r = await c.get(path)
            policy = r.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe" not in policy
            assert "frame-ancestors 'none'" in policy and r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer" and r.headers["x-content-type-options"] == "nosniff"
            if r.headers["content-type"].startswith("text/html"):
                assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", r.text) == [], path  # no inline script
                assert " style=" not in r.text and "<style" not in r.text and " on" + "click=" not in r.text, path
        docs = await c.get("/docs")
        assert docs.headers["content-security-policy"].startswith("frame-ancestors 'none'")


async def test_a_body_over_the_limit_is_refused_before_it_is_read(web, sessions):
    officer = sample.commune_user(WEB_DISTRICT, web["communes"][WEB_DISTRICT])
    limit = web["app"].user_middleware[0].kwargs["max_body"]
    async with browser(web["app"], sessions, officer) as (c, csrf):
        big = await c.post(
            f"/households/{web['mine'].code}/act",
            data={"csrf": csrf, "step": "verify"},
            files={"files": ("huge.pdf", b"0" * (limit + 1), "application/pdf")},
        )
        assert big.status_code == 413 and big.json()["type"] == "RequestTooLarge"
        assert "frame-ancestors 'none'" in big.headers["content-security-policy"]

        # Streamed, with no Content-Length: refused as soon as the bytes pass the limit, 413 all the same.
        async def chunks():
            for _ in range(limit // 2**20 + 2):
                yield b"0" * 2**20

        streamed = await c.post("/api/session", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413, streamed.text
    assert (await household_state(web["app"].state.client, web["mine"].code)).stage.value == "verification"


async def test_an_upload_is_stored_only_from_an_officer_who_may_take_that_step(web, client, sessions, settings):
    commune = web["communes"][WEB_DISTRICT]
    officer = sample.commune_user(WEB_DISTRICT, commune)
    (h,) = await enroll(
        client, sessions, web["task_queue"], make_households(1, district=WEB_DISTRICT, commune=commune, programme="")
    )
    folder = settings.state_dir / "evidence"
    async with browser(web["app"], sessions, officer) as (c, csrf):
        for code, step, scan in [
            (web["theirs"].code, "verify", b"another district's file"),  # outside the jurisdiction
            (h.code, "approve", b"the district's step"),  # not the commune's to take
        ]:
            r = await c.post(
                f"/households/{code}/act",
                data={"csrf": csrf, "step": step},
                files={"files": ("x.pdf", scan, "application/pdf")},
            )
            assert r.status_code == 403 and ("OutsideJurisdiction" in r.text or "AttachmentRefused" in r.text)
            assert not (folder / hashlib.sha256(scan).hexdigest()).exists()
        kept = b"the commune's own minutes"
        ok = await c.post(
            f"/households/{h.code}/act",
            data={"csrf": csrf, "step": "verify", **FINDINGS_FORM},
            files={"files": ("bb.pdf", kept, "application/pdf")},
        )
        assert ok.status_code == 303 and "message=" in ok.headers["location"]
    stored = folder / hashlib.sha256(kept).hexdigest()
    assert stored.read_bytes() == kept
    assert stored.stat().st_mode & 0o777 == 0o600 and folder.stat().st_mode & 0o077 == 0


async def test_the_posting_and_an_objection_are_taken_from_the_household_page(web, client, sessions):
    """The commune officer posts the verified household and records an objection with the page's fields; the
    district officer is offered the objection's resolution (and no approval while it is open) and dismisses
    it; the approval is offered then."""
    commune = web["communes"][WEB_DISTRICT]
    officer, district = sample.commune_user(WEB_DISTRICT, commune), sample.district_user(WEB_DISTRICT)
    (h,) = await enroll(
        client, sessions, web["task_queue"], make_households(1, district=WEB_DISTRICT, commune=commune, programme="")
    )
    await take_step(client, sessions, h.code, Step.VERIFY, officer, evidence=["BB"])
    posted_on = today() - timedelta(days=14)
    async with browser(web["app"], sessions, officer) as (c, csrf):
        page = await c.get(f"/households/{h.code}")
        assert 'value="post_list"' in page.text and 'name="posted_on"' in page.text
        form = {"csrf": csrf, "step": "post_list", "evidence": "TB-01", "place": "Nhà văn hóa thôn"}
        done = await c.post(f"/households/{h.code}/act", data=form | {"posted_on": posted_on.isoformat()})
        assert "message=" in done.headers["location"], done.headers["location"]
        raised = {"csrf": csrf, "step": "record_objection", "evidence": "DON-01", "objector": "Ông Tám"}
        late = await c.post(f"/households/{h.code}/act", data=raised | {"about": "Đã có nhà"})
        assert "PostingClosed" in late.headers["location"]  # raised today: the posting is over
        on = (posted_on + timedelta(days=1)).isoformat()
        done = await c.post(f"/households/{h.code}/act", data=raised | {"about": "Đã có nhà", "raised_on": on})
        assert "message=" in done.headers["location"], done.headers["location"]
    (objection,) = (await household_state(client, h.code)).objections
    async with browser(web["app"], sessions, district) as (c, csrf):
        page = await c.get(f"/households/{h.code}")
        assert 'value="resolve_objection"' in page.text and f'name="objection" value="{objection.id}"' in page.text
        assert 'value="approve"' not in page.text  # the objection is open
        resolve = {"csrf": csrf, "step": "resolve_objection", "evidence": "BB-XM", "objection": str(objection.id)}
        done = await c.post(
            f"/households/{h.code}/act", data=resolve | {"outcome": "dismissed", "reason": "Không có cơ sở"}
        )
        assert "message=" in done.headers["location"], done.headers["location"]
        page = await c.get(f"/households/{h.code}")
        assert 'value="approve"' in page.text and 'value="resolve_objection"' not in page.text


async def test_receipts_are_answered_and_a_grievance_resolved_from_the_pages_and_the_dossier_downloaded(
    web, client, sessions
):
    """A commune officer answers a plan's household "not received" with the page's form; the grievance queue
    shows it; Finance resolves it there; an auditor downloads the settlement dossier, a commune officer may
    not."""
    from models.finance import TrancheStatus
    from operations import receipts
    from tests.test_review import _until

    commune = web["communes"][WEB_DISTRICT]
    officer = sample.commune_user(WEB_DISTRICT, commune)
    decision = f"{uuid.uuid4().int % 10**6}/QĐ-WEB"
    fresh = make_households(1, district=WEB_DISTRICT, commune=commune, programme="", decision_ref=decision)
    (h,) = await enroll(client, sessions, web["task_queue"], fresh)
    await _until(client, sessions, h, lambda s: any(t.status is TrancheStatus.PAID for t in s.tranches))
    async with browser(web["app"], sessions, officer) as (c, csrf):  # drawing a plan is Finance's
        refused = await c.post("/receipts", data={"csrf": csrf, "name": "x", "decision": decision, "full": "on"})
        assert "RoleNotAllowed" in refused.headers["location"]
    async with browser(web["app"], sessions, sample.FINANCE_USERS[0]) as (c, csrf):
        drawn = await c.post("/receipts", data={"csrf": csrf, "name": "Web", "decision": decision, "full": "on"})
        assert drawn.headers["location"].startswith("/receipts/"), drawn.headers["location"]
    plan_id = int(drawn.headers["location"].split("?")[0].rsplit("/", 1)[1])
    async with browser(web["app"], sessions, officer) as (c, csrf):
        page = await c.get(f"/receipts/{plan_id}")
        assert h.code in page.text and 'name="answer"' in page.text
        done = await c.post(
            f"/receipts/{plan_id}/answer",
            data={"csrf": csrf, "code": h.code, "answer": "not_received", "channel": "visit", "note": "Chưa nhận"},
        )
        assert "message=" in done.headers["location"] and "grievance" in done.headers["location"]
        queue = await c.get("/grievances")
        assert h.code in queue.text and "Chưa nhận tiền" in queue.text
        forbidden = await c.get("/dossier.xlsx")
        assert forbidden.headers["content-type"].startswith("text/html")
    (g,) = [x for x in await receipts.grievances(sessions, officer, open_only=True) if x.household_code == h.code]
    async with browser(web["app"], sessions, sample.FINANCE_USERS[1]) as (c, csrf):
        done = await c.post(
            f"/grievances/{g.id}/resolve",
            data={"csrf": csrf, "outcome": "resolved", "resolution": "Hộ xác nhận đã nhận sau khi kiểm tra tài khoản"},
        )
        assert "message=" in done.headers["location"], done.headers["location"]
    assert not [x for x in await receipts.grievances(sessions, officer, open_only=True) if x.id == g.id]
    async with browser(web["app"], sessions, sample.AUDITOR_USER) as (c, csrf):
        got = await c.get("/dossier.xlsx")
        assert got.status_code == 200 and got.headers["content-type"] == XLSX_TYPE
        book = openpyxl.load_workbook(io.BytesIO(got.content))
        summary = dict(r[:2] for r in book["Tổng hợp"].iter_rows(min_row=2, values_only=True))
        assert summary["Khớp đối chiếu"] == "khớp đến từng đồng"
