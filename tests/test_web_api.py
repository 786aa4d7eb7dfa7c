"""The HTTP API on the real engine: sign-in with throttling, sessions with CSRF, API tokens, jurisdiction on
reads, and every lifecycle step refused by the engine to every role its policy does not name."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from functools import partial

import httpx
import pytest
from sqlalchemy import func, select

from core.errors import Refusal
from core.formatting import today
from db import account_changes as account_trail
from db import signing_keys
from db import users as users_db
from db.schema import api_tokens, web_sessions, workflow_policies
from models.finance import TrancheStatus
from models.household import Step
from models.policy import WorkflowPolicy
from operations import access, accounts, sample
from operations.actions import household_state
from tests.conftest import FRONT_DOOR, TEST_SIGNING_FILE, WEB_DISTRICT, WEB_OTHER_DISTRICT, password_for, token_for
from web.app import COOKIE

PASSWORD = "mat-khau-thu-nghiem-2025"
DISTRICT, OTHER_DISTRICT = WEB_DISTRICT, WEB_OTHER_DISTRICT


def http(app, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver", headers=headers)


async def test_sign_in_sets_a_strict_cookie_and_throttles_guessing(web, sessions):
    user = f"kt.{uuid.uuid4().hex[:6]}"  # an auditor of its own: the lock it ends with lasts 15 minutes
    async with sessions() as s, s.begin():
        row = dict(
            user_id=user,
            full_name="Kiểm Tra",
            role="auditor",
            agency="Thanh tra tỉnh",
            province=sample.PROVINCE,
            district=None,
            commune=None,
            active=True,
        )
        await users_db.upsert(s, [row])
    await password_for(sessions, user, PASSWORD)
    async with http(web["app"]) as c:
        ok = await c.post("/api/session", json={"user_id": user, "password": PASSWORD})
        assert ok.status_code == 200 and ok.json()["user"]["role"] == "auditor"
        cookie = ok.headers["set-cookie"]
        assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie
        me = await c.get("/api/me")
        assert me.status_code == 200, me.text
        assert me.json()["user_id"] == user
        assert (await c.delete("/api/session", headers={"X-CSRF-Token": ok.json()["csrf_token"]})).status_code == 204
        assert (await c.get("/api/me")).status_code == 401

    async with http(web["app"]) as c:
        for _ in range(access.MAX_FAILURES):
            bad = await c.post("/api/session", json={"user_id": user, "password": "wrong-password-1"})
            assert bad.status_code == 401 and bad.headers["content-type"] == "application/problem+json"
            assert bad.json()["type"] == "BadCredentials"
        locked = await c.post("/api/session", json={"user_id": user, "password": PASSWORD})
        assert locked.status_code == 429 and "too many failed sign-ins" in locked.json()["detail"]
        unknown = await c.post("/api/session", json={"user_id": "no.such.user", "password": PASSWORD})
        assert unknown.status_code == 401 and unknown.json()["type"] == "BadCredentials"  # same answer as a wrong one


async def test_a_weak_password_is_refused_with_the_rule(sessions):
    async with sessions() as s:
        with pytest.raises(Refusal, match="at least 10 characters"):
            await access.set_password(s, sample.PROVINCE_USER, "short")
        with pytest.raises(Refusal, match="must not contain the user name"):
            await access.set_password(s, sample.PROVINCE_USER, f"xx{sample.PROVINCE_USER}xx")
        await s.rollback()


async def test_a_session_needs_its_csrf_token_for_an_action(web, sessions):
    user = sample.district_user(DISTRICT)
    await password_for(sessions, user, PASSWORD)
    async with http(web["app"]) as c:
        csrf = (await c.post("/api/session", json={"user_id": user, "password": PASSWORD})).json()["csrf_token"]
        url = f"/api/households/{web['mine'].code}/actions/approve"
        forged = await c.post(url, json={"evidence": ["QĐ"]})
        assert forged.status_code == 403 and forged.json()["type"] == "CsrfFailed"
        # With the token the request reaches the engine, which decides: approval comes after verification.
        refused = await c.post(url, json={"evidence": ["QĐ"]}, headers={"X-CSRF-Token": csrf})
        assert refused.status_code == 409 and refused.json()["type"] == "OutOfOrder"


async def test_tokens_are_revocable_and_a_disabled_user_is_signed_out(web, sessions):
    """A revoked token is refused at once (the user's other token is not); disabling the user ends their open
    session in the database and revokes their tokens; enabled again, neither comes back: a new sign-in is
    needed (db/access.py `set_active`)."""
    user = f"nh.{uuid.uuid4().hex[:6]}"  # a user of its own: disabling a shared one would revoke others' tokens
    row = dict(
        user_id=user,
        full_name="Lăng Thị Thử",
        role="vbsp_officer",
        agency="NHCSXH chi nhánh Lạng Sơn",
        province=sample.PROVINCE,
        district=None,
        commune=None,
    )
    admin = sample.ADMIN_USER
    async with sessions() as s, s.begin():
        await accounts.add_user(s, admin, row, PASSWORD, signer=FRONT_DOOR)
        old = await accounts.issue_token(s, admin, user, "old", signer=FRONT_DOOR)
        token = await accounts.issue_token(s, admin, user, "sync", signer=FRONT_DOOR)

    async def me(**kw) -> tuple[int, str]:
        async with http(web["app"], kw.get("token")) as c:
            if "cookie" in kw:
                c.cookies.set(COOKIE, kw["cookie"])
            r = await c.get("/api/me")
        return r.status_code, r.json()["user_id" if r.status_code == 200 else "type"]

    assert await me(token=old) == (200, user)
    async with sessions() as s, s.begin():
        await accounts.revoke_token(s, admin, user, "old", signer=FRONT_DOOR)
    assert await me(token=old) == (401, "NotSignedIn")
    assert await me(token=token) == (200, user)
    async with http(web["app"]) as c:
        assert (await c.post("/api/session", json={"user_id": user, "password": PASSWORD})).status_code == 200
        cookie = c.cookies[COOKIE]
    assert await me(cookie=cookie) == (200, user)

    async with sessions() as s, s.begin():
        await accounts.set_active(s, admin, user, False, signer=FRONT_DOOR)
    assert await me(token=token) == (401, "NotSignedIn")
    assert await me(cookie=cookie) == (401, "NotSignedIn")
    async with sessions() as s:
        w, t = web_sessions.c, api_tokens.c
        ended = await s.scalar(select(w.ended_at).where(w.token_hash == access.digest(cookie)))
        live = await s.scalar(select(func.count()).where(t.user_id == user, t.revoked_at.is_(None)))
    assert ended is not None and live == 0  # ended and revoked in the database, not only refused while disabled

    async with sessions() as s, s.begin():
        await accounts.set_active(s, admin, user, True, signer=FRONT_DOOR)
    assert await me(token=token) == (401, "NotSignedIn")  # disabling revoked the token for good
    assert await me(cookie=cookie) == (401, "NotSignedIn")  # and ended the session for good
    async with http(web["app"]) as c:
        assert (await c.post("/api/session", json={"user_id": user, "password": PASSWORD})).status_code == 200
        assert (await c.get("/api/me")).json()["user_id"] == user
    async with sessions() as s:
        changes = [(r.action, r.details.get("name")) for r in await account_trail.read(s, user_id=user)]
    assert changes == [
        ("add", None),
        ("token", "old"),
        ("token", "sync"),
        ("revoke", "old"),
        ("disable", None),
        ("enable", None),
    ]
    assert await me(token="xnt_not-a-token") == (401, "NotSignedIn")


async def test_an_officer_neither_sees_nor_acts_on_another_districts_household(web, sessions):
    token = await token_for(sessions, sample.district_user(DISTRICT))
    mine, theirs = web["mine"], web["theirs"]
    async with http(web["app"], token) as c:
        listed = (await c.get("/api/households", params={"limit": 1000})).json()
        assert mine.code in {h["code"] for h in listed} and {h["district"] for h in listed} == {DISTRICT}
        assert (await c.get(f"/api/households/{theirs.code}")).json()["type"] == "UnknownHousehold"
        assert (await c.get(f"/api/households/{theirs.code}/timeline")).status_code == 404
        assert (await c.get("/api/households/%20")).json()["type"] == "UnknownHousehold"  # a blank code is none
        detail = (await c.get(f"/api/households/{mine.code}")).json()
        assert detail["household"]["code"] == mine.code and detail["state"]["stage"] == "verification"
        commune = sample.commune_user(OTHER_DISTRICT, web["communes"][OTHER_DISTRICT])
    async with http(web["app"], await token_for(sessions, commune)) as c:
        refused = await c.post(f"/api/households/{mine.code}/actions/verify", json={"evidence": ["BB"]})
        assert refused.status_code == 403 and refused.json()["type"] == "OutsideJurisdiction"
    async with http(web["app"], token) as c:
        report = await c.get("/api/reports/province")
        assert report.status_code == 403 and report.json()["type"] == "ProvinceWideOnly"


async def test_every_step_is_refused_to_every_role_the_policy_does_not_name(web, client, sessions):
    """One household walked through its whole path over the API. Before each step, every role whose user
    covers the household but whom the policy does not name for the step is refused by the engine
    (403 RoleNotAllowed, its message); then the officer it names takes the step (200). The household is its
    own: the module's `mine` stays in verification for the other tests, whatever their order."""
    from tests.conftest import FINDINGS, enroll, make_households

    commune = web["communes"][DISTRICT]
    fresh = make_households(1, district=DISTRICT, commune=commune, programme="")
    (h,) = await enroll(client, sessions, web["task_queue"], fresh)
    users = {
        "commune_officer": sample.commune_user(DISTRICT, commune),
        "district_officer": sample.district_user(DISTRICT),
        "finance_officer": sample.FINANCE_USERS[0],
        "treasury_officer": sample.TREASURY_USER,
        "province_officer": sample.PROVINCE_USER,
        "auditor": sample.AUDITOR_USER,
        "admin": sample.ADMIN_USER,
        "vbsp_officer": sample.VBSP_USER,
        "payment_channel": sample.CHANNEL_USER,
    }
    tokens = {role: await token_for(sessions, u) for role, u in users.items()}
    version = (await household_state(client, h.code)).policy_version
    async with sessions() as s:
        document = await s.scalar(select(workflow_policies.c.document).where(workflow_policies.c.version == version))
    policy = WorkflowPolicy.model_validate(document)
    path = [
        (Step.VERIFY, "commune_officer", {"details": {"findings": FINDINGS.model_dump(mode="json")}}),
        (Step.POST_LIST, "commune_officer", {"details": sample.posting_for(h, today() - timedelta(days=14))}),
        (Step.APPROVE, "district_officer", {}),
        (Step.ALLOCATE, "finance_officer", {}),
        (Step.REPORT_PROGRESS, "commune_officer", {"milestone": "foundation"}),
        (Step.AUTHORISE_PAYOUT, "finance_officer", {"tranche": 1}),
        (Step.RELEASE_PAYOUT, "treasury_officer", {"tranche": 1}),
        (Step.COMPLETE_CONSTRUCTION, "commune_officer", {}),
        (Step.ACCEPT, "district_officer", {"evidence": [f"BB-NT/{h.code}", f"BB-SD/{h.code}"]}),
        (Step.AUTHORISE_PAYOUT, "finance_officer", {"tranche": 2}),
        (Step.RELEASE_PAYOUT, "treasury_officer", {"tranche": 2}),
        (Step.SETTLE, "finance_officer", {}),
    ]
    if h.support_type.value == "repair":
        path[3] = (Step.REPORT_PROGRESS, "commune_officer", {"milestone": "progress_30"})
    refusals, named_here = 0, {}
    for step, allowed, extra in path:
        body = {"evidence": [f"{step.value}/{h.code}"], **extra}
        url = f"/api/households/{h.code}/actions/{step.value}"
        if step is Step.SETTLE:
            await _until_paid(client, h.code)
        named = policy.rule(step).roles
        assert allowed in named
        named_here[step] = set(named) & users.keys()
        for role, token in tokens.items():
            if role in named:
                continue
            async with http(web["app"], token) as c:
                offered = {a["step"] for a in (await c.get(f"/api/households/{h.code}")).json()["actions"]}
                assert step.value not in offered, (step, role)  # a page offers only what the engine accepts
                r = await c.post(url, json=body)
            assert (r.status_code, r.json()["type"]) == (403, "RoleNotAllowed"), (step, role, r.text)
            assert f"role {role!r} may not take step {step.value!r}" in r.json()["detail"]
            refusals += 1
        actor = sample.FINANCE_USERS[1] if step is Step.SETTLE else users[allowed]  # the allocator may not settle
        async with http(web["app"], await token_for(sessions, actor) if step is Step.SETTLE else tokens[allowed]) as c:
            offered = (await c.get(f"/api/households/{h.code}")).json()["actions"]
            assert any(a["step"] == step.value for a in offered), (step, offered)
            done = await c.post(url, json=body)
        assert done.status_code == 200, (step, done.text)
    # Exactly the roles the seeded policy does not name for each step (migrations 0002, 0003): verify, approve,
    # release (twice) and accept name two of these nine roles, the seven other steps one (posting: 0016).
    assert named_here == {
        Step.VERIFY: {"commune_officer", "district_officer"},
        Step.POST_LIST: {"commune_officer"},
        Step.APPROVE: {"district_officer", "province_officer"},
        Step.ALLOCATE: {"finance_officer"},
        Step.REPORT_PROGRESS: {"commune_officer"},
        Step.AUTHORISE_PAYOUT: {"finance_officer"},
        Step.RELEASE_PAYOUT: {"commune_officer", "treasury_officer"},
        Step.COMPLETE_CONSTRUCTION: {"commune_officer"},
        Step.ACCEPT: {"commune_officer", "district_officer"},
        Step.SETTLE: {"finance_officer"},
    }
    assert refusals == 5 * (len(users) - 2) + 7 * (len(users) - 1) == 91
    async with http(web["app"], tokens["auditor"]) as c:
        lines = (await c.get(f"/api/households/{h.code}/timeline", params={"lang": "en"})).json()["lines"]
        report = (await c.get("/api/reports/province")).json()
    whats = [line["what"] for line in lines]
    assert whats[-2:] == ["Settled: settlement → closed", "Workflow closed"]
    assert sum(w.startswith("Payment confirmed by the channel") for w in whats) == 2
    assert any(d["decision_ref"] == h.decision_ref for d in report["by_decision"])


async def _until_paid(client, code: str) -> None:
    for _ in range(400):
        tranches = (await household_state(client, code)).tranches
        if tranches and all(t.status is TrancheStatus.PAID for t in tranches):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{code}: tranches not paid")


def users_cmd(settings, *args: str, stdin: str | None = None, token: str | None = None) -> subprocess.CompletedProcess:
    # The suite's front-door ring signs the trail rows (its public half is what the suite's database trusts).
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "COLUMNS": "200",
        "SIGNING_KEYS_FILE": str(TEST_SIGNING_FILE),
    }
    for inherited in ("HOUSING_TOKEN", "SIGNING_KEYS"):
        env.pop(inherited, None)
    if token:
        env["HOUSING_TOKEN"] = token  # the administrator's credential (operations/credentials.py)
    return subprocess.run(
        [sys.executable, "starter.py", "users", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


async def test_users_are_managed_from_the_command_line(web, settings, sessions):
    user = f"xa.{uuid.uuid4().hex[:6]}"
    commune = web["communes"][DISTRICT]
    admin = ("--admin", sample.ADMIN_USER)
    cmd = partial(users_cmd, token=await token_for(sessions, sample.ADMIN_USER))
    added = await asyncio.to_thread(
        cmd,
        settings,
        "add",
        user,
        "--name",
        "Hà Thị Xã",
        "--role",
        "commune_officer",
        "--agency",
        f"UBND xã {commune}",
        "--district",
        DISTRICT,
        "--commune",
        commune,
        "--password-stdin",
        *admin,
        stdin=PASSWORD + "\n",
    )
    assert added.returncode == 0, added.stderr
    again = await asyncio.to_thread(
        cmd, settings, "add", user, "--name", "x", "--role", "commune_officer", "--agency", "x", "--generate", *admin
    )
    assert again.returncode == 1 and "UserExists" in again.stderr
    bad_role = await asyncio.to_thread(
        cmd, settings, "add", "x.y", "--name", "x", "--role", "mayor", "--agency", "x", "--generate", *admin
    )
    assert bad_role.returncode == 1 and "--role 'mayor' is not a role of the programme" in bad_role.stderr
    async with http(web["app"]) as c:
        signed = await c.post("/api/session", json={"user_id": user, "password": PASSWORD})
        assert signed.status_code == 200 and signed.json()["user"]["commune"] == commune

    token = await asyncio.to_thread(cmd, settings, "token", user, "--name", "sync", *admin)
    value = token.stdout.strip().splitlines()[-1]
    assert token.returncode == 0 and value.startswith("xnt_")
    async with http(web["app"], value) as c:
        assert (await c.get("/api/me")).json()["user_id"] == user
    # `users revoke`: the token is refused at once, and the revocation is a signed row of the account trail.
    revoked = await asyncio.to_thread(cmd, settings, "revoke", user, "--name", "sync", *admin)
    assert revoked.returncode == 0, revoked.stderr
    assert f"token 'sync' of {user} revoked by {sample.ADMIN_USER}" in revoked.stdout + revoked.stderr
    async with http(web["app"], value) as c:
        assert (await c.get("/api/me")).json()["type"] == "NotSignedIn"
    async with sessions() as s:
        last = (await account_trail.read(s, user_id=user))[-1]
        keys = await signing_keys.load(s)
        whole = await account_trail.verify(s)
    assert (last.action, last.by_user, last.details) == ("revoke", sample.ADMIN_USER, {"name": "sync"})
    assert account_trail.signature_problem(last, keys) is None and whole.ok, whole.reason
    second = await asyncio.to_thread(cmd, settings, "token", user, "--name", "sync-2", *admin)
    value = second.stdout.strip().splitlines()[-1]
    async with http(web["app"], value) as c:
        assert (await c.get("/api/me")).json()["user_id"] == user

    reset = await asyncio.to_thread(cmd, settings, "reset", user, "--generate", *admin)
    new_password = reset.stdout.split("(shown once): ")[1].split()[0]
    assert (await asyncio.to_thread(cmd, settings, "disable", user, *admin)).returncode == 0
    async with http(web["app"]) as c:
        refused = await c.post("/api/session", json={"user_id": user, "password": new_password})
        assert (refused.status_code, refused.json()["type"]) == (403, "UserDisabled")
    async with http(web["app"], value) as c:
        assert (await c.get("/api/me")).status_code == 401
    listed = await asyncio.to_thread(users_cmd, settings, "list")
    assert user in listed.stdout
