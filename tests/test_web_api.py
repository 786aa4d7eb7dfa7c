"""The HTTP API on the real engine: sign-in with throttling, sessions with CSRF, API tokens, jurisdiction on
reads, and every lifecycle step refused by the engine to every role its policy does not name."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from functools import partial

import httpx
import pytest
from sqlalchemy import select

from core.errors import DomainError
from db import access
from db import users as users_db
from db.schema import workflow_policies
from models.finance import TrancheStatus
from models.household import Step
from models.policy import WorkflowPolicy
from operations import sample
from operations.actions import household_state
from tests.conftest import TEST_SIGNING_FILE, WEB_DISTRICT, WEB_OTHER_DISTRICT, password_for, token_for
from web.app import COOKIE

PASSWORD = "mat-khau-thu-nghiem-2025"
DISTRICT, OTHER_DISTRICT = WEB_DISTRICT, WEB_OTHER_DISTRICT


def http(app, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver", headers=headers)


async def test_sign_in_sets_a_strict_cookie_and_throttles_guessing(web, sessions):
    user = f"kt.{uuid.uuid4().hex[:6]}"  # an auditor of its own: the lock it ends with lasts 15 minutes
    async with sessions() as s, s.begin():
        row = dict(user_id=user, full_name="Kiểm Tra", role="auditor", agency="Thanh tra tỉnh",
                   province=sample.PROVINCE, district=None, commune=None, active=True)  # fmt: skip
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
        with pytest.raises(DomainError, match="at least 10 characters"):
            await access.set_password(s, sample.PROVINCE_USER, "short")
        with pytest.raises(DomainError, match="must not contain the user name"):
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
    user = sample.VBSP_USER
    token = await token_for(sessions, user)
    async with http(web["app"], token) as c:
        assert (await c.get("/api/me")).json()["role"] == "vbsp_officer"
    async with sessions() as s, s.begin():
        await access.set_active(s, user, False)
    try:
        async with http(web["app"], token) as c:
            assert (await c.get("/api/me")).status_code == 401
    finally:
        async with sessions() as s, s.begin():
            await access.set_active(s, user, True)
    async with http(web["app"], token) as c:
        assert (await c.get("/api/me")).status_code == 401  # disabling revoked the token for good
    async with http(web["app"], "xnt_not-a-token") as c:
        assert (await c.get("/api/me")).json()["type"] == "NotSignedIn"


async def test_an_officer_neither_sees_nor_acts_on_another_districts_household(web, sessions):
    token = await token_for(sessions, sample.district_user(DISTRICT))
    mine, theirs = web["mine"], web["theirs"]
    async with http(web["app"], token) as c:
        listed = (await c.get("/api/households", params={"limit": 1000})).json()
        assert mine.code in {h["code"] for h in listed} and {h["district"] for h in listed} == {DISTRICT}
        assert (await c.get(f"/api/households/{theirs.code}")).json()["type"] == "UnknownHousehold"
        assert (await c.get(f"/api/households/{theirs.code}/timeline")).status_code == 404
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
    (403 RoleNotAllowed, its message); then the officer it names takes the step (200)."""
    h = web["mine"]
    commune = web["communes"][DISTRICT]
    users = {
        "commune_officer": sample.commune_user(DISTRICT, commune), "district_officer": sample.district_user(DISTRICT),
        "finance_officer": sample.FINANCE_USERS[0], "treasury_officer": sample.TREASURY_USER,
        "province_officer": sample.PROVINCE_USER, "auditor": sample.AUDITOR_USER, "admin": sample.ADMIN_USER,
        "vbsp_officer": sample.VBSP_USER, "payment_channel": sample.CHANNEL_USER,
    }  # fmt: skip
    tokens = {role: await token_for(sessions, u) for role, u in users.items()}
    version = (await household_state(client, h.code)).policy_version
    async with sessions() as s:
        document = await s.scalar(select(workflow_policies.c.document).where(workflow_policies.c.version == version))
    policy = WorkflowPolicy.model_validate(document)
    path = [
        (Step.VERIFY, "commune_officer", {}), (Step.APPROVE, "district_officer", {}),
        (Step.ALLOCATE, "finance_officer", {}), (Step.REPORT_PROGRESS, "commune_officer", {"milestone": "foundation"}),
        (Step.AUTHORISE_PAYOUT, "finance_officer", {"tranche": 1}),
        (Step.RELEASE_PAYOUT, "treasury_officer", {"tranche": 1}),
        (Step.COMPLETE_CONSTRUCTION, "commune_officer", {}), (Step.ACCEPT, "district_officer", {}),
        (Step.AUTHORISE_PAYOUT, "finance_officer", {"tranche": 2}),
        (Step.RELEASE_PAYOUT, "treasury_officer", {"tranche": 2}),
        (Step.SETTLE, "finance_officer", {}),
    ]  # fmt: skip
    if h.support_type.value == "repair":
        path[3] = (Step.REPORT_PROGRESS, "commune_officer", {"milestone": "progress_30"})
    refusals = 0
    for step, allowed, extra in path:
        body = {"evidence": [f"{step.value}/{h.code}"], **extra}
        url = f"/api/households/{h.code}/actions/{step.value}"
        if step is Step.SETTLE:
            await _until_paid(client, h.code)
        named = policy.rule(step).roles
        assert allowed in named
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
    assert refusals >= len(path) * (len(users) - 3)
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
    env = {**os.environ, "DATABASE_URL": settings.database_url, "COLUMNS": "200",
           "SIGNING_KEYS_FILE": str(TEST_SIGNING_FILE)}  # fmt: skip
    for inherited in ("HOUSING_TOKEN", "SIGNING_KEYS"):
        env.pop(inherited, None)
    if token:
        env["HOUSING_TOKEN"] = token  # the administrator's credential (operations/credentials.py)
    return subprocess.run([sys.executable, "starter.py", "users", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip


async def test_users_are_managed_from_the_command_line(web, settings, sessions):
    user = f"xa.{uuid.uuid4().hex[:6]}"
    commune = web["communes"][DISTRICT]
    admin = ("--admin", sample.ADMIN_USER)
    cmd = partial(users_cmd, token=await token_for(sessions, sample.ADMIN_USER))
    added = await asyncio.to_thread(cmd, settings, "add", user, "--name", "Hà Thị Xã", "--role",
                                    "commune_officer", "--agency", f"UBND xã {commune}", "--district", DISTRICT,
                                    "--commune", commune, "--password-stdin", *admin,
                                    stdin=PASSWORD + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    again = await asyncio.to_thread(cmd, settings, "add", user, "--name", "x", "--role", "commune_officer",
                                    "--agency", "x", "--generate", *admin)  # fmt: skip
    assert again.returncode == 1 and "UserExists" in again.stderr
    bad_role = await asyncio.to_thread(cmd, settings, "add", "x.y", "--name", "x", "--role", "mayor",
                                       "--agency", "x", "--generate", *admin)  # fmt: skip
    assert bad_role.returncode == 1 and "--role 'mayor' is not a role of the programme" in bad_role.stderr
    async with http(web["app"]) as c:
        signed = await c.post("/api/session", json={"user_id": user, "password": PASSWORD})
        assert signed.status_code == 200 and signed.json()["user"]["commune"] == commune

    token = await asyncio.to_thread(cmd, settings, "token", user, "--name", "sync", *admin)
    value = token.stdout.strip().splitlines()[-1]
    assert token.returncode == 0 and value.startswith("xnt_")
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
