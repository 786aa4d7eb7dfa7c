"""The web app's security guarantees, each asserted by its exact outcome against the real app (the suite's
Temporal and PostgreSQL): CSRF on every state-changing route that takes the session cookie (and nothing done
when it is refused), API tokens revoked at once and the revocation in the signed account trail, sign-out and
disabling ending sessions server-side, and commune-level jurisdiction on every read route.

Every test makes its own users (through account administration, signed by the suite's front door) and its
own households, so none depends on another's order or leftovers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import func, select

from core.errors import Refusal
from db import account_changes as trail
from db import signing_keys
from db.schema import api_tokens, audit_log, household_tranches, households, web_sessions
from models.finance import TrancheStatus
from models.household import Step
from operations import access, accounts, sample
from operations.actions import household_state
from tests.conftest import FRONT_DOOR, WEB_DISTRICT, WEB_OTHER_DISTRICT, enroll, make_households, post_list, take_step
from web.app import COOKIE

PASSWORD = "mat-khau-bao-mat-2025"
ADMIN = sample.ADMIN_USER  # the seeded administrator: the account changes below are made by them
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


# ---------------------------------------------------------------------------------------------- helpers


async def new_user(sessions, role: str, *, district: str | None = None, commune: str | None = None) -> str:
    """A user of this test's own, added as `users add` adds one (signed trail row, password set)."""
    user_id = f"sec.{role.split('_')[0]}.{uuid.uuid4().hex[:8]}"
    row = dict(
        user_id=user_id,
        full_name=f"Thử {role}",
        role=role,
        agency=f"Cơ quan {role}",
        province=sample.PROVINCE,
        district=district,
        commune=commune,
    )
    async with sessions() as s, s.begin():
        await accounts.add_user(s, ADMIN, row, PASSWORD, signer=FRONT_DOOR)
    return user_id


def http(app, *, token: str | None = None, cookie: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    cookies = {COOKIE: cookie} if cookie else None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://testserver", headers=headers, cookies=cookies
    )


async def api_sign_in(c: httpx.AsyncClient, user: str) -> str:
    """Sign in over the API; the session's CSRF token."""
    r = await c.post("/api/session", json={"user_id": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["csrf_token"]


async def page_sign_in(c: httpx.AsyncClient, user: str) -> str:
    """Sign in through the login form as a browser does; the pages' CSRF field."""
    form = await c.get("/login")
    login_csrf = CSRF_FIELD.search(form.text).group(1)
    signed = await c.post("/login", data={"user_id": user, "password": PASSWORD, "csrf": login_csrf})
    assert (signed.status_code, signed.headers["location"]) == (303, "/")
    home = await c.get("/")
    assert home.status_code == 200
    return CSRF_FIELD.search(home.text).group(1)


@asynccontextmanager
async def browser(app, user: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with http(app) as c:
        yield c, await page_sign_in(c, user)


async def session_row(sessions, cookie: str):
    async with sessions() as s:
        return (await s.execute(select(web_sessions).where(web_sessions.c.token_hash == access.digest(cookie)))).one()


async def audit_rows(sessions, code: str) -> int:
    async with sessions() as s:
        return await s.scalar(select(func.count()).select_from(audit_log).where(audit_log.c.household_code == code))


async def stage_of(client, code: str) -> str:
    return (await household_state(client, code)).stage.value


async def enrolled(web, client, sessions, n: int = 1, *, commune: str | None = None, **overrides):
    commune = commune or web["communes"][WEB_DISTRICT]
    fresh = make_households(n, district=WEB_DISTRICT, commune=commune, programme="", **overrides)
    return await enroll(client, sessions, web["task_queue"], fresh)


async def verified(web, client, sessions):
    """A household of the web district's first commune, verified and posted: waiting for the district's approval."""
    (h,) = await enrolled(web, client, sessions)
    await take_step(
        client, sessions, h.code, Step.VERIFY, sample.commune_user(WEB_DISTRICT, h.commune), evidence=["BB-XM"]
    )
    await post_list(client, sessions, h.code)
    assert await stage_of(client, h.code) == "approval"
    return h


async def signed_out_of_pages(app, cookie: str) -> bool:
    """Whether a page sends this cookie's holder to the sign-in page."""
    async with http(app, cookie=cookie) as c:
        r = await c.get("/")
    return (r.status_code, r.headers.get("location")) == (303, "/login")


async def api_status(app, *, cookie: str | None = None, token: str | None = None) -> tuple[int, str | None]:
    async with http(app, cookie=cookie, token=token) as c:
        r = await c.get("/api/me")
    return r.status_code, (r.json().get("type") if r.status_code != 200 else r.json()["user_id"])


# ------------------------------------------------------------------------ 1. CSRF on every unsafe route


async def test_a_logout_without_the_csrf_token_is_refused_and_the_session_lives_on(web, sessions):
    user = await new_user(sessions, "auditor")
    async with browser(web["app"], user) as (c, csrf), browser(web["app"], user) as (_, other_csrf):
        cookie = c.cookies[COOKIE]
        # No token, a made-up one, and the (valid) token of the same user's other session: all refused.
        for sent in ({}, {"csrf": "made-up"}, {"csrf": other_csrf}):
            refused = await c.post("/logout", data=sent)
            assert (refused.status_code, "CsrfFailed" in refused.text) == (403, True), sent
            assert c.cookies[COOKIE] == cookie  # the cookie was not cleared either
            assert (await session_row(sessions, cookie)).ended_at is None
            assert (await c.get("/")).status_code == 200
        done = await c.post("/logout", data={"csrf": csrf})
        assert (done.status_code, done.headers["location"]) == (303, "/login")
    # Ended server-side: the old cookie, sent again by hand, is refused by the pages and the API.
    assert (await session_row(sessions, cookie)).ended_at is not None
    assert await signed_out_of_pages(web["app"], cookie)
    assert await api_status(web["app"], cookie=cookie) == (401, "NotSignedIn")


async def test_an_api_sign_out_needs_the_csrf_header_and_ends_the_session_server_side(web, sessions):
    user = await new_user(sessions, "auditor")
    async with http(web["app"]) as c:
        csrf = await api_sign_in(c, user)
        cookie = c.cookies[COOKIE]
        for headers in ({}, {"X-CSRF-Token": "made-up"}, {"X-CSRF-Token": ""}):
            refused = await c.delete("/api/session", headers=headers)
            assert (refused.status_code, refused.json()["type"]) == (403, "CsrfFailed"), headers
            assert (await c.get("/api/me")).json()["user_id"] == user
            assert (await session_row(sessions, cookie)).ended_at is None
        assert (await c.delete("/api/session", headers={"X-CSRF-Token": csrf})).status_code == 204
    assert (await session_row(sessions, cookie)).ended_at is not None
    assert await api_status(web["app"], cookie=cookie) == (401, "NotSignedIn")
    assert await signed_out_of_pages(web["app"], cookie)


async def _bulk(c, code, csrf):
    return await c.post("/households/bulk", data={**csrf, "step": "approve", "evidence": "QĐ-1", "code": [code]})


async def _act(c, code, csrf):
    return await c.post(f"/households/{code}/act", data={**csrf, "step": "approve", "evidence": "QĐ-1"})


async def _api(c, code, csrf):
    headers = {"X-CSRF-Token": csrf["csrf"]} if "csrf" in csrf else {}
    return await c.post(f"/api/households/{code}/actions/approve", json={"evidence": ["QĐ-1"]}, headers=headers)


@pytest.mark.parametrize("post", [_bulk, _act, _api], ids=["households/bulk", "households/act", "api/actions"])
async def test_a_step_posted_without_the_csrf_token_is_refused_and_not_taken(web, client, sessions, post):
    """The district's approval of a verified household, posted with the session cookie: refused without the
    session's CSRF token (none, made up, another session's), the household untouched; taken with it."""
    h = await verified(web, client, sessions)
    user = await new_user(sessions, "district_officer", district=WEB_DISTRICT)
    before = await audit_rows(sessions, h.code)
    async with browser(web["app"], user) as (c, csrf), browser(web["app"], user) as (_, other_csrf):
        for sent in ({}, {"csrf": "made-up"}, {"csrf": other_csrf}):
            refused = await post(c, h.code, sent)
            assert refused.status_code == 403, (sent, refused.text)
            if post is _api:
                assert refused.json()["type"] == "CsrfFailed"
            else:
                assert "CsrfFailed" in refused.text
            assert await stage_of(client, h.code) == "approval"
            assert await audit_rows(sessions, h.code) == before
        done = await post(c, h.code, {"csrf": csrf})
        assert done.status_code in (200, 303), done.text
    assert await stage_of(client, h.code) == "fund_allocation"
    assert await audit_rows(sessions, h.code) == before + 1


async def _tranche(sessions, code: str, n: int = 1) -> str:
    async with sessions() as s:
        t = household_tranches.c
        return await s.scalar(select(t.status).where(t.household_code == code, t.tranche == n))


async def test_a_finance_batch_without_the_csrf_token_is_refused_and_starts_no_batch(web, client, sessions):
    decision = f"SEC-{uuid.uuid4().hex[:6]}/QĐ-UBND"  # a decision of its own: the batch selects only this one
    (h,) = await enrolled(web, client, sessions, decision_ref=decision, support_type="new_build")
    commune_officer = sample.commune_user(WEB_DISTRICT, h.commune)
    await take_step(client, sessions, h.code, Step.VERIFY, commune_officer, evidence=["BB"])
    await take_step(client, sessions, h.code, Step.APPROVE, sample.district_user(WEB_DISTRICT), evidence=["QĐ"])
    await take_step(client, sessions, h.code, Step.ALLOCATE, sample.FINANCE_USERS[0], evidence=["PB"])
    await take_step(
        client, sessions, h.code, Step.REPORT_PROGRESS, commune_officer, evidence=["AN"], milestone="foundation"
    )
    assert await _tranche(sessions, h.code) == "due"
    user = await new_user(sessions, "finance_officer")
    form = {"action": "authorise", "tranche": "1", "decision": decision, "evidence": "CV-CHI"}
    async with browser(web["app"], user) as (c, csrf):
        for sent in ({}, {"csrf": ""}):  # the form's field absent or empty: refused as invalid input
            missing = await c.post("/finance/batch", data={**form, **sent})
            assert (missing.status_code, missing.json()["type"]) == (422, "InvalidInput"), sent
            assert missing.json()["detail"].startswith("body.csrf: Field required")
        refused = await c.post("/finance/batch", data={**form, "csrf": "made-up"})
        assert (refused.status_code, "CsrfFailed" in refused.text) == (403, True)
        # run_batch waits for the batch's end before answering: had one started, the tranche would be
        # authorised by now.
        assert await _tranche(sessions, h.code) == "due"
        assert (await household_state(client, h.code)).tranches[0].status is TrancheStatus.DUE
        done = await c.post("/finance/batch", data={**form, "csrf": csrf})
        assert done.status_code == 200 and "authorise t1: 1 done" in done.text, done.text
    assert await _tranche(sessions, h.code) == "authorised"


async def test_the_three_way_check_is_not_run_for_a_post_without_the_csrf_token(web, sessions):
    user = await new_user(sessions, "auditor")
    async with browser(web["app"], user) as (c, csrf):
        for sent in ({}, {"csrf": ""}):
            missing = await c.post("/audit/verify", data=sent)
            assert (missing.status_code, missing.json()["type"]) == (422, "InvalidInput"), sent
        refused = await c.post("/audit/verify", data={"csrf": "made-up"})
        assert refused.status_code == 403 and "CsrfFailed" in refused.text and "discrepancies" not in refused.text
        ran = await c.post("/audit/verify", data={"csrf": csrf})
        assert ran.status_code == 200 and re.search(r"\d+ discrepancies · \d+ steps · \d+ households", ran.text)


async def test_the_codec_with_a_session_cookie_needs_the_csrf_token_or_an_allowed_origin(web, settings, sessions):
    user = await new_user(sessions, "auditor")
    body = {"payloads": []}
    async with http(web["app"]) as c:
        csrf = await api_sign_in(c, user)
        for headers in ({}, {"Origin": "https://evil.example"}, {"X-CSRF-Token": "made-up"}):
            refused = await c.post("/codec/decode", json=body, headers=headers)
            assert (refused.status_code, refused.json()["type"]) == (403, "CsrfFailed"), headers
        assert (await c.post("/codec/decode", json=body, headers={"X-CSRF-Token": csrf})).status_code == 200
        allowed = settings.codec_origins[0]
        assert (await c.post("/codec/decode", json=body, headers={"Origin": allowed})).status_code == 200


async def test_a_login_form_without_its_own_token_opens_no_session(web, sessions):
    user = await new_user(sessions, "auditor")

    async def opened() -> int:
        async with sessions() as s:
            return await s.scalar(select(func.count()).select_from(web_sessions).where(web_sessions.c.user_id == user))

    async with http(web["app"]) as c:
        form = await c.get("/login")
        login_csrf = CSRF_FIELD.search(form.text).group(1)
        forged = await c.post("/login", data={"user_id": user, "password": PASSWORD, "csrf": "made-up"})
        assert (forged.status_code, forged.headers["location"]) == (303, "/login?error=CsrfFailed")
        empty = await c.post("/login", data={"user_id": user, "password": PASSWORD, "csrf": ""})
        assert (empty.status_code, empty.json()["type"]) == (422, "InvalidInput")
        assert COOKIE not in c.cookies
        assert await opened() == 0
        ok = await c.post("/login", data={"user_id": user, "password": PASSWORD, "csrf": login_csrf})
        assert (ok.status_code, ok.headers["location"]) == (303, "/")
    assert await opened() == 1


# ------------------------------------------------------------------------ 2. revoked tokens


async def test_a_revoked_token_is_refused_at_once_and_the_revocation_is_in_the_signed_trail(web, sessions):
    user = await new_user(sessions, "vbsp_officer")
    async with sessions() as s, s.begin():
        token = await accounts.issue_token(s, ADMIN, user, "sync", signer=FRONT_DOOR)
        kept = await accounts.issue_token(s, ADMIN, user, "report", signer=FRONT_DOOR)
    assert await api_status(web["app"], token=token) == (200, user)
    async with sessions() as s, s.begin():
        await accounts.revoke_token(s, ADMIN, user, "sync", signer=FRONT_DOOR)
    assert await api_status(web["app"], token=token) == (401, "NotSignedIn")
    assert await api_status(web["app"], token=kept) == (200, user)  # only the token named is revoked
    async with sessions() as s:
        rows = await trail.read(s, user_id=user)
        whole = await trail.verify(s)
        keys = await signing_keys.load(s)
        revoked_at = await s.scalar(
            select(api_tokens.c.revoked_at).where(api_tokens.c.user_id == user, api_tokens.c.name == "sync")
        )
    assert [(r.action, r.by_user, r.details.get("name")) for r in rows] == [
        ("add", ADMIN, None),
        ("token", ADMIN, "sync"),
        ("token", ADMIN, "report"),
        ("revoke", ADMIN, "sync"),
    ]
    assert rows[-1].details == {"name": "sync"} and trail.signature_problem(rows[-1], keys) is None
    assert whole.ok, whole.reason
    assert revoked_at is not None
    # A token is revoked once: a second revocation is refused, and leaves no row in the trail.
    with pytest.raises(Refusal, match="has no live token named 'sync'"):
        async with sessions() as s, s.begin():
            await accounts.revoke_token(s, ADMIN, user, "sync", signer=FRONT_DOOR)
    async with sessions() as s:
        assert len(await trail.read(s, user_id=user)) == 4
    # Only an administrator revokes: another user's attempt is refused and the token lives on.
    with pytest.raises(Refusal, match="only an administrator changes accounts"):
        async with sessions() as s, s.begin():
            await accounts.revoke_token(s, sample.PROVINCE_USER, user, "report", signer=FRONT_DOOR)
    assert await api_status(web["app"], token=kept) == (200, user)


# ------------------------------------------------------------------------ 3. disabling signs out


async def test_disabling_a_user_ends_their_sessions_and_tokens_and_enabling_needs_a_new_sign_in(web, sessions):
    user = await new_user(sessions, "commune_officer", district=WEB_DISTRICT, commune=web["communes"][WEB_DISTRICT])
    async with sessions() as s, s.begin():
        token = await accounts.issue_token(s, ADMIN, user, "sync", signer=FRONT_DOOR)
    async with http(web["app"]) as api, browser(web["app"], user) as (page, _):
        await api_sign_in(api, user)
        cookies = [api.cookies[COOKIE], page.cookies[COOKIE]]
    assert [await api_status(web["app"], cookie=k) for k in cookies] == [(200, user)] * 2
    assert await api_status(web["app"], token=token) == (200, user)

    async with sessions() as s, s.begin():
        await accounts.set_active(s, ADMIN, user, False, signer=FRONT_DOOR)
    assert [await api_status(web["app"], cookie=k) for k in cookies] == [(401, "NotSignedIn")] * 2
    assert [await signed_out_of_pages(web["app"], k) for k in cookies] == [True, True]
    assert await api_status(web["app"], token=token) == (401, "NotSignedIn")
    async with sessions() as s:
        ended = [(await session_row(sessions, k)).ended_at for k in cookies]
        revoked = await s.scalar(select(api_tokens.c.revoked_at).where(api_tokens.c.user_id == user))
    assert None not in ended and revoked is not None  # ended in the database, not only refused
    async with http(web["app"]) as c:
        r = await c.post("/api/session", json={"user_id": user, "password": PASSWORD})
        assert (r.status_code, r.json()["type"]) == (403, "UserDisabled")

    async with sessions() as s, s.begin():
        await accounts.set_active(s, ADMIN, user, True, signer=FRONT_DOOR)
    # Enabled again: the old sessions and the token stay ended (db/access.py set_active); a new sign-in works.
    assert [await api_status(web["app"], cookie=k) for k in cookies] == [(401, "NotSignedIn")] * 2
    assert await api_status(web["app"], token=token) == (401, "NotSignedIn")
    async with http(web["app"]) as c:
        await api_sign_in(c, user)
        assert (await c.get("/api/me")).json()["user_id"] == user
    async with sessions() as s:
        actions = [(r.action, r.by_user) for r in await trail.read(s, user_id=user)]
    assert actions == [("add", ADMIN), ("token", ADMIN), ("disable", ADMIN), ("enable", ADMIN)]


# ------------------------------------------------------------------------ 4. commune-level jurisdiction


@pytest.fixture
async def two_communes(web, client, sessions):
    """A commune officer of the web district's first commune, and a household in its second commune."""
    mine_commune, other_commune = sample.UNITS[WEB_DISTRICT][:2]
    assert web["communes"][WEB_DISTRICT] == mine_commune
    (neighbour,) = await enrolled(web, client, sessions, commune=other_commune)
    officer = await new_user(sessions, "commune_officer", district=WEB_DISTRICT, commune=mine_commune)
    async with sessions() as s:
        h = households.c
        own = set(await s.scalars(select(h.code).where(h.district == WEB_DISTRICT, h.commune == mine_commune)))
    assert web["mine"].code in own and neighbour.code not in own
    return {
        "officer": officer,
        "neighbour": neighbour,
        "own": own,
        "commune": mine_commune,
        "other_commune": other_commune,
    }


async def test_a_commune_officer_reads_only_their_communes_households_on_the_api(web, sessions, two_communes):
    officer, neighbour, own = two_communes["officer"], two_communes["neighbour"], two_communes["own"]
    mine = web["mine"]
    async with sessions() as s, s.begin():
        token = await accounts.issue_token(s, ADMIN, officer, "sync", signer=FRONT_DOOR)
    async with http(web["app"], token=token) as c:
        listed = (await c.get("/api/households", params={"limit": 1000})).json()
        assert {h["code"] for h in listed} == own
        assert {(h["district"], h["commune"]) for h in listed} == {(WEB_DISTRICT, two_communes["commune"])}
        # Asking for the other commune, the other district or the neighbour's group gives nothing more.
        for params in ({"commune": two_communes["other_commune"]}, {"district": WEB_OTHER_DISTRICT}):
            assert (await c.get("/api/households", params=params)).json() == []
        for path in (
            f"/api/households/{neighbour.code}",
            f"/api/households/{neighbour.code}/timeline",
            f"/api/households/{neighbour.code.lower()}",
            f"/api/households/{web['theirs'].code}",
        ):
            r = await c.get(path)
            assert (r.status_code, r.json()["type"]) == (404, "UnknownHousehold"), path
            assert neighbour.head_of_household not in r.text
        assert (await c.get(f"/api/households/{mine.code}")).json()["household"]["code"] == mine.code
        assert (await c.get(f"/api/households/{mine.code}/timeline")).json()["household"] == mine.code
        report = await c.get("/api/reports/province")
        assert (report.status_code, report.json()["type"]) == (403, "ProvinceWideOnly")
        acted = await c.post(f"/api/households/{neighbour.code}/actions/verify", json={"evidence": ["BB"]})
        assert (acted.status_code, acted.json()["type"]) == (403, "OutsideJurisdiction")
    # The control: the province's auditor does see the neighbour.
    auditor = await new_user(sessions, "auditor")
    async with sessions() as s, s.begin():
        audit_token = await accounts.issue_token(s, ADMIN, auditor, "read", signer=FRONT_DOOR)
    async with http(web["app"], token=audit_token) as c:
        assert (await c.get(f"/api/households/{neighbour.code}")).status_code == 200


async def test_a_commune_officer_reads_only_their_communes_households_on_the_pages(web, client, sessions, two_communes):
    officer, neighbour, own = two_communes["officer"], two_communes["neighbour"], two_communes["own"]
    mine = web["mine"]
    linked = re.compile(r'<a href="/households/([^"?]+)"')
    async with browser(web["app"], officer) as (c, csrf):
        listing = await c.get("/households")
        assert set(linked.findall(listing.text)) == own
        for params in ({"commune": two_communes["other_commune"]}, {"q": neighbour.code}):
            r = await c.get("/households", params=params)
            assert r.status_code == 200 and linked.findall(r.text) == [], params
            assert neighbour.head_of_household not in r.text
        other = await c.get(f"/households/{neighbour.code}")
        assert "not in your jurisdiction" in other.text and neighbour.head_of_household not in other.text
        assert 'name="step"' not in other.text
        page = await c.get(f"/households/{mine.code}")
        assert mine.head_of_household in page.text and "not in your jurisdiction" not in page.text
        for path in ("/finance", "/finance/reconciliation.xlsx", f"/audit?code={neighbour.code}"):
            r = await c.get(path)
            assert r.status_code == 200 and "this page is not for your role (commune_officer)" in r.text, path
        before = await audit_rows(sessions, neighbour.code)
        bulk = await c.post(
            "/households/bulk", data={"csrf": csrf, "step": "verify", "evidence": "BB", "code": [neighbour.code]}
        )
        assert "OutsideJurisdiction" in bulk.text
    assert await audit_rows(sessions, neighbour.code) == before
    assert await stage_of(client, neighbour.code) == "verification"


# The dashboard once filtered its counts by district only, so a commune officer saw the counts of every
# commune of their district; its counts now follow the officer's jurisdiction.
async def test_a_commune_officers_dashboard_counts_only_their_commune(web, sessions, two_communes):
    async with sessions() as s:
        h = households.c
        own_open = await s.scalar(
            select(func.count()).where(
                h.district == WEB_DISTRICT, h.commune == two_communes["commune"], h.stage != "cancelled"
            )
        )
    async with browser(web["app"], two_communes["officer"]) as (c, _):
        home = await c.get("/")
    covered = re.findall(r'<td class="num">\d+ / (\d+) ', home.text)
    assert covered and int(covered[-1]) == own_open  # the last deadline covers every household not cancelled
    totals = re.findall(r'<td class="num">(\d+)</td></tr>', home.text)  # the progress bars' totals
    assert [int(n) for n in totals] == [len(two_communes["own"])]
