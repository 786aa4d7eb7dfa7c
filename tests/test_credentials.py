"""Nobody can be impersonated at the command line: `--as USER` acts only for the person who proves to be USER
(password or API token, checked as the web app checks them), user administration needs an administrator
and leaves a tamper-evident trail, and a payout batch is signed by the front door: one started by hand
selects nothing. The commands run as subprocesses against the suite's Temporal dev server and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from core.errors import Refusal
from core.settings import ROOT
from db import account_changes as trail
from db import users as users_db
from db.engine import Sessions, make_engine, make_sessions
from db.schema import account_changes, audit_log, login_attempts, user_credentials
from models.finance import BatchAction, BatchSelection, PayoutBatchInput, TrancheStatus
from models.household import Stage, workflow_id_for
from operations import access, accounts, credentials, finance_ops, payouts, sample
from operations.actions import household_state
from operations.seed import seed_demo
from tests.conftest import (
    FINDINGS_ARGS,
    FRONT_DOOR,
    TEST_KEYS_FILE,
    TEST_SIGNING_FILE,
    drive_one,
    enroll,
    make_households,
    new_database,
    password_for,
    post_list,
    token_for,
)
from web.app import COOKIE
from workflows.batch import PayoutBatchWorkflow

PASSWORD = "đúng-mật-khẩu-2026"


async def starter(
    client, database_url: str, *args: str, token: str | None = None, stdin: str = "", task_queue: str | None = None
) -> subprocess.CompletedProcess:
    """`starter.py …` as an officer runs it: standard input a pipe (not a terminal, so nothing is prompted),
    the credential only what the test gives."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PAYLOAD_KEYS_FILE": str(TEST_KEYS_FILE),
        "SIGNING_KEYS_FILE": str(TEST_SIGNING_FILE),
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "COLUMNS": "200",
    }
    for inherited in ("HOUSING_TOKEN", "SIGNING_KEYS", "PAYLOAD_KEYS"):
        env.pop(inherited, None)
    if token:
        env["HOUSING_TOKEN"] = token
    if task_queue:
        env["TEMPORAL_TASK_QUEUE"] = task_queue
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "starter.py", *args],
        input=stdin,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _events(client, code: str) -> int:
    return len((await client.get_workflow_handle(workflow_id_for(code)).fetch_history()).events)


async def _stored_digest(sessions, user_id: str) -> str:
    async with sessions() as s:
        stored = await s.scalar(select(user_credentials.c.password_hash).where(user_credentials.c.user_id == user_id))
    return trail.credential_digest(stored)


def _not_set(user_id: str) -> str:
    return f"Unauthenticated: the credential of {user_id} was not set through account administration"


async def _new_officer(sessions, role: str, *, district: str, commune: str | None = None) -> str:
    """An officer of this test's own for `district` (and `commune`), added as `users add` adds one (signed trail
    row): the shared demo officers' credentials and failed sign-ins are other tests' too."""
    user_id = f"{'xa' if commune else 'huyen'}.t{uuid.uuid4().hex[:8]}"
    row = dict(
        user_id=user_id,
        full_name=f"Thử {role}",
        role=role,
        agency=f"UBND {commune or district}",
        province=sample.PROVINCE,
        district=district,
        commune=commune,
    )
    async with sessions() as s, s.begin():
        await accounts.add_user(s, sample.ADMIN_USER, row, f"khoi-tao-{uuid.uuid4().hex}", signer=FRONT_DOOR)
    return user_id


async def _officers_of(sessions, h) -> tuple[str, str]:
    """A commune officer and a district officer of this test's own, responsible for household `h`."""
    commune = await _new_officer(sessions, "commune_officer", district=h.district, commune=h.commune)
    return commune, await _new_officer(sessions, "district_officer", district=h.district)


SET_HASH = text(
    "INSERT INTO user_credentials (user_id, password_hash) VALUES (:u, :h) "
    "ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash"
)


# ------------------------------------------------------------------ --as needs the user's credential


async def test_act_is_taken_only_for_the_person_who_proves_to_be_the_user(client, sessions, settings, task_queue):
    (h,) = await enroll(client, sessions, task_queue, make_households(1))
    commune, district = await _officers_of(sessions, h)
    async with sessions() as s, s.begin():
        await accounts.reset_password(s, accounts.SETUP, commune, PASSWORD, signer=FRONT_DOOR)
    verify = ("act", h.code, "verify", "--as", commune, "-e", f"BB/{h.code}", *FINDINGS_ARGS)

    async def act(*args: str, **kw) -> subprocess.CompletedProcess:
        return await starter(client, settings.database_url, *args, task_queue=task_queue, **kw)

    before = await _events(client, h.code)
    nothing = await act(*verify)
    assert nothing.returncode == 1 and "Unauthenticated: no credential for" in nothing.stderr, nothing.stderr
    wrong = await act(*verify, "--password-stdin", stdin="sai-mat-khau-123\n")
    assert wrong.returncode == 1 and "Unauthenticated: user name or password is wrong" in wrong.stderr
    someone_elses = await act(*verify, token=await token_for(sessions, district))
    assert someone_elses.returncode == 1 and f"is {district!r}'s: it cannot act as {commune!r}" in someone_elses.stderr
    forged = await act(*verify, token="xnt_" + "A" * 43)
    assert forged.returncode == 1 and "Unauthenticated: the API token is not known" in forged.stderr
    # Refused before anything reached the engine: no event, no row, still waiting for verification.
    assert await _events(client, h.code) == before
    assert (await household_state(client, h.code)).stage is Stage.VERIFICATION
    async with sessions() as s:
        failed = await s.scalar(
            select(func.count()).where(
                login_attempts.c.user_id == commune,
                login_attempts.c.ok.is_(False),
                login_attempts.c.client == credentials.CLIENT,
            )
        )
    assert failed == 1  # the wrong password was recorded, as the web's sign-in records it

    by_token = await act(*verify, token=await token_for(sessions, commune))
    assert by_token.returncode == 0, by_token.stdout + by_token.stderr
    assert "verify done" in by_token.stdout
    await post_list(client, sessions, h.code)
    async with sessions() as s, s.begin():
        await accounts.reset_password(s, accounts.SETUP, district, PASSWORD, signer=FRONT_DOOR)
    by_password = await act(
        "act", h.code, "approve", "--as", district, "-e", "270/QĐ-UBND", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert by_password.returncode == 0, by_password.stdout + by_password.stderr
    state = await household_state(client, h.code)
    assert state.stage is Stage.FUND_ALLOCATION
    verified, posted, approved = state.timeline[-3:]
    assert (verified.step.value, verified.user_id, approved.step.value, approved.user_id) == (
        "verify",
        commune,
        "approve",
        district,
    )
    assert posted.step.value == "post_list" and posted.role == "commune_officer"


async def test_wrong_passwords_lock_the_name_at_the_command_line_as_on_the_web(sessions):
    user = f"xa.t{uuid.uuid4().hex[:6]}"
    row = dict(
        user_id=user,
        full_name="Thử Khóa",
        role="commune_officer",
        agency="UBND xã",
        province=sample.PROVINCE,
        district=None,
        commune=None,
    )
    async with sessions() as s, s.begin():
        await accounts.add_user(s, sample.ADMIN_USER, row, PASSWORD, signer=FRONT_DOOR)
    right = credentials.Credential("password", PASSWORD)
    assert (await credentials.authenticate(sessions, user, right)).user_id == user
    for _ in range(5):
        with pytest.raises(credentials.Unauthenticated, match="password is wrong"):
            await credentials.authenticate(sessions, user, credentials.Credential("password", "sai-mat-khau-99"))
    with pytest.raises(credentials.Unauthenticated, match="too many failed sign-ins"):
        await credentials.authenticate(sessions, user, right)  # locked, whoever tries: the right one too

    other = f"xa.t{uuid.uuid4().hex[:6]}"
    async with sessions() as s, s.begin():
        await accounts.add_user(s, sample.ADMIN_USER, row | {"user_id": other}, PASSWORD, signer=FRONT_DOOR)
        token = await accounts.issue_token(s, sample.ADMIN_USER, other, "script", signer=FRONT_DOOR)
        await accounts.set_active(s, sample.ADMIN_USER, other, False, signer=FRONT_DOOR)
    for refused in (credentials.Credential("token", token), right):
        with pytest.raises(credentials.Unauthenticated):  # disabled: neither its token nor its password works
            await credentials.authenticate(sessions, other, refused)


# ------------------------------------------------------------------ a credential the application's login wrote


async def test_a_credential_written_with_the_application_login_signs_nobody_in(
    web, client, sessions, settings, task_queue
):
    """The application's login may write `user_credentials` and `api_tokens` (the web app sets passwords and
    issues tokens). A password hash or token row written with it, not through account administration, is
    refused at the command line and at the web's sign-in: the front door signs nothing as that officer."""
    (h,) = await enroll(client, sessions, task_queue, make_households(1))
    commune, district = await _officers_of(sessions, h)  # their credentials are tampered with below
    await password_for(sessions, district, PASSWORD)  # a real one, to copy
    token = "xnt_" + uuid.uuid4().hex * 2
    async with sessions() as s, s.begin():  # housing_app, as a process holding only its login would
        await s.execute(SET_HASH, {"u": commune, "h": access.HASHER.hash("mat-khau-ke-gian-1")})
        await s.execute(
            text("INSERT INTO api_tokens (user_id, name, token_hash) VALUES (:u, :n, :h)"),
            {"u": commune, "n": f"ke-gian-{uuid.uuid4().hex[:6]}", "h": access.digest(token)},
        )
    verify = ("act", h.code, "verify", "--as", commune, "-e", f"BB/{h.code}", *FINDINGS_ARGS)
    before = await _events(client, h.code)
    by_password = await starter(
        client, settings.database_url, *verify, "--password-stdin", stdin="mat-khau-ke-gian-1\n", task_queue=task_queue
    )
    assert by_password.returncode == 1 and _not_set(commune) in by_password.stderr, by_password.stderr
    by_token = await starter(client, settings.database_url, *verify, token=token, task_queue=task_queue)
    assert by_token.returncode == 1 and _not_set(commune) in by_token.stderr, by_token.stderr
    async with http_client(web["app"]) as c:
        web_in = await c.post("/api/session", json={"user_id": commune, "password": "mat-khau-ke-gian-1"})
        assert web_in.status_code == 401 and web_in.json()["type"] == "Unauthenticated", web_in.text
        assert (await c.get("/api/me", headers={"Authorization": f"Bearer {token}"})).status_code == 401
    # Nor is a session row the application's login inserts a session: only the web app's signature makes one.
    cookie = uuid.uuid4().hex
    async with sessions() as s, s.begin():
        await s.execute(
            text(
                "INSERT INTO web_sessions (token_hash, user_id, csrf_token, expires_at) "
                "VALUES (:h, :u, 'x', now() + interval '1 hour')"
            ),
            {"h": access.digest(cookie), "u": commune},
        )
    async with http_client(web["app"]) as c:
        c.cookies.set(COOKIE, cookie)
        assert (await c.get("/api/me")).status_code == 401
    # Someone else's real hash, copied over the officer's, proves nothing either: the trail names the hash per user.
    async with sessions() as s, s.begin():
        real = await s.scalar(select(user_credentials.c.password_hash).where(user_credentials.c.user_id == district))
        await s.execute(SET_HASH, {"u": commune, "h": real})
    with pytest.raises(credentials.Unauthenticated, match="not set through account administration"):
        await credentials.authenticate(sessions, commune, credentials.Credential("password", PASSWORD))
    assert await _events(client, h.code) == before
    assert (await household_state(client, h.code)).stage is Stage.VERIFICATION

    # Set through account administration, the same kind of credential works.
    await password_for(sessions, commune, "mat-khau-ke-gian-1")
    done = await starter(
        client, settings.database_url, *verify, "--password-stdin", stdin="mat-khau-ke-gian-1\n", task_queue=task_queue
    )
    assert done.returncode == 0 and "verify done" in done.stdout, done.stdout + done.stderr
    async with http_client(web["app"]) as c:
        opened = await c.post("/api/session", json={"user_id": commune, "password": "mat-khau-ke-gian-1"})
        assert opened.status_code == 200, opened.text
    async with http_client(web["app"]) as c:  # the web app's own session, sent as the forged one was
        c.cookies.set(COOKIE, opened.cookies[COOKIE])
        assert (await c.get("/api/me")).json()["user_id"] == commune


def http_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver")


# ------------------------------------------------------------------ user administration


async def test_user_administration_needs_an_administrators_credential_and_is_recorded(client, settings, sessions):
    user = f"xa.{uuid.uuid4().hex[:6]}"
    add = (
        "users",
        "add",
        user,
        "--name",
        "Nguyễn Văn Thử",
        "--role",
        "commune_officer",
        "--agency",
        "UBND xã",
        "--district",
        "Lộc Bình",
        "--generate",
    )
    admin_token = await token_for(sessions, sample.ADMIN_USER)
    finance_token = await token_for(sessions, sample.FINANCE_USERS[0])

    async def users_cli(*args: str, **kw) -> subprocess.CompletedProcess:
        return await starter(client, settings.database_url, *args, **kw)

    unproved = await users_cli(*add, "--admin", sample.ADMIN_USER)
    assert unproved.returncode == 1 and "Unauthenticated" in unproved.stderr
    not_an_admin = await users_cli(*add, "--admin", sample.FINANCE_USERS[0], token=finance_token)
    assert not_an_admin.returncode == 1 and "NotAllowed" in not_an_admin.stderr and "administer" in not_an_admin.stderr
    claims_admin = await users_cli(*add, "--admin", sample.ADMIN_USER, token=finance_token)
    assert claims_admin.returncode == 1 and "cannot act as 'qt.admin'" in claims_admin.stderr
    async with sessions() as s:
        assert await users_db.get(s, user) is None and await trail.read(s, user_id=user) == []

    added = await users_cli(*add, "--admin", sample.ADMIN_USER, token=admin_token)
    assert added.returncode == 0, added.stderr
    password = added.stdout.split("(shown once): ")[1].split()[0]
    issued = await users_cli("users", "token", user, "--name", "sync", "--admin", sample.ADMIN_USER, token=admin_token)
    assert issued.returncode == 0, issued.stderr
    value = issued.stdout.strip().splitlines()[-1]
    disabled = await users_cli("users", "disable", user, "--admin", sample.ADMIN_USER, token=admin_token)
    assert disabled.returncode == 0, disabled.stderr

    async with sessions() as s:
        changes = await trail.read(s, user_id=user)
        whole = await trail.verify(s)
    assert [(c.action, c.by_user) for c in changes] == [
        ("add", sample.ADMIN_USER),
        ("token", sample.ADMIN_USER),
        ("disable", sample.ADMIN_USER),
    ]
    assert changes[0].details == {
        "role": "commune_officer",
        "agency": "UBND xã",
        "jurisdiction": f"{sample.PROVINCE} / Lộc Bình",
        "credential": await _stored_digest(sessions, user),
    }
    assert changes[1].details == {"name": "sync", "credential": trail.credential_digest(access.digest(value))}
    assert all(c.assertion is not None for c in changes)  # each signed by the command line's ring
    written = json.dumps([c.details for c in changes], ensure_ascii=False)
    assert password not in written and value not in written  # never a secret in the trail
    assert whole.ok, whole.reason

    shown = await users_cli("users", "trail", user, "--verify")
    assert shown.returncode == 0, shown.stderr
    assert "account trail verified" in shown.stdout and "disable" in shown.stdout and sample.ADMIN_USER in shown.stdout


# The remaining tests each work in a database of their own: no administrator can sign in there yet, its
# account trail holds only what the test writes, and two of them break the trail on purpose.


@dataclass
class Fresh:
    url: str  # the application's login to it, for the command line
    sessions: Sessions  # as the application's role
    owner: Sessions  # as the schema owner, for tampering on purpose


@pytest.fixture
async def fresh(settings):
    """A database of the test's own on the suite's server, migrated (as `scratch` is) and seeded with the demo's
    officers, none of them with a credential."""
    own = await new_database(settings, "fresh")
    app_engine, owner_engine = make_engine(own), make_engine(own, url=own.owner_asyncpg_url)
    try:
        sessions = make_sessions(app_engine)
        await seed_demo(sessions)
        yield Fresh(url=own.database_url, sessions=sessions, owner=make_sessions(owner_engine))
    finally:
        await app_engine.dispose()
        await owner_engine.dispose()


async def test_the_first_administrator_is_set_up_once(client, fresh):
    first = await starter(
        client, fresh.url, "users", "bootstrap", sample.ADMIN_USER, "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert first.returncode == 0, first.stderr
    again = await starter(
        client, fresh.url, "users", "bootstrap", "qt.khac", "--name", "Người Khác", "--agency", "Sở", "--generate"
    )
    assert again.returncode == 1 and "AdminExists" in again.stderr
    not_admin = await starter(client, fresh.url, "users", "bootstrap", sample.FINANCE_USERS[0], "--generate")
    assert not_admin.returncode == 1
    # The administrator's password and the new user's, both piped: the administrator's line first.
    added = await starter(
        client,
        fresh.url,
        "users",
        "add",
        "xa.moi",
        "--name",
        "Xã Mới",
        "--role",
        "commune_officer",
        "--agency",
        "UBND xã",
        "--password-stdin",
        "--admin",
        sample.ADMIN_USER,
        "--admin-password-stdin",
        stdin=f"{PASSWORD}\nmat-khau-xa-moi-1\n",
    )
    assert added.returncode == 0, added.stderr
    async with fresh.sessions() as s:
        changes = await trail.read(s)
        assert (
            await credentials.authenticate(
                fresh.sessions, "xa.moi", credentials.Credential("password", "mat-khau-xa-moi-1")
            )
        ).user_id == "xa.moi"
    assert [(c.action, c.by_user, c.user_id) for c in changes] == [
        ("bootstrap", accounts.SETUP, sample.ADMIN_USER),
        ("add", sample.ADMIN_USER, "xa.moi"),
    ]


async def test_a_trail_row_forged_with_the_application_login_is_found(client, fresh):
    """The application's login appends a row "reset by qt.admin" that chains like a real one and names the
    hash it wrote for the officer, carrying a real row's signature: the officer's password is refused, and
    `users trail --verify` exits 1 naming the row."""
    officer = sample.FINANCE_USERS[1]
    async with fresh.sessions() as s, s.begin():
        await accounts.issue_token(s, accounts.SETUP, officer, "so-sach", signer=FRONT_DOOR)
    assert (await starter(client, fresh.url, "users", "trail", "--verify")).returncode == 0
    forged = access.HASHER.hash("mat-khau-ke-gian-2")
    async with fresh.sessions() as s, s.begin():
        real = (await trail.read(s))[-1]  # a real row's signature, copied
        await s.execute(SET_HASH, {"u": officer, "h": forged})
        prev = await s.scalar(text("SELECT hash FROM account_changes ORDER BY id DESC LIMIT 1"))
        at, details = datetime.now(UTC), {"credential": trail.credential_digest(forged)}
        digest = trail.row_hash(
            prev, at=at, by_user=sample.ADMIN_USER, action="reset", user_id=officer, details=details
        )
        row_id = await s.scalar(
            text(
                "INSERT INTO account_changes (at, by_user, action, user_id, details, prev_hash, hash, assertion) "
                "VALUES (:at, :b, 'reset', :u, CAST(:d AS jsonb), :p, :h, CAST(:a AS jsonb)) RETURNING id"
            ),
            {
                "at": at,
                "b": sample.ADMIN_USER,
                "u": officer,
                "d": json.dumps(details),
                "p": prev,
                "h": digest,
                "a": json.dumps(real.assertion),
            },
        )
    with pytest.raises(credentials.Unauthenticated, match="not set through account administration"):
        await credentials.authenticate(
            fresh.sessions, officer, credentials.Credential("password", "mat-khau-ke-gian-2")
        )
    broken = await starter(client, fresh.url, "users", "trail", "--verify")
    assert broken.returncode == 1, broken.stdout
    assert f"account trail broken at row {row_id} (reset of {officer} by {sample.ADMIN_USER}" in broken.stderr
    assert "its signature is not a front door's for this row" in broken.stderr, broken.stderr


async def test_an_edited_trail_row_is_found(client, fresh):
    async with fresh.sessions() as s, s.begin():
        await accounts.reset_password(s, sample.ADMIN_USER, sample.FINANCE_USERS[0], PASSWORD, signer=FRONT_DOOR)
        changed = await accounts.issue_token(
            s, sample.ADMIN_USER, sample.FINANCE_USERS[0], "ke-toan", signer=FRONT_DOOR
        )
        assert changed.startswith("xnt_")
    verified = await starter(client, fresh.url, "users", "trail", "--verify")
    assert verified.returncode == 0, verified.stderr
    async with fresh.sessions() as s:
        (target,) = [c for c in await trail.read(s) if c.action == "reset"]
    # The application's login cannot edit the trail at all …
    with pytest.raises(DBAPIError):
        async with fresh.sessions() as s, s.begin():
            await s.execute(text("UPDATE account_changes SET by_user = 'qt.khac' WHERE id = :id"), {"id": target.id})
    # … and the owner who switches the trigger off to make a reset look like someone else's is found out.
    async with fresh.owner() as s, s.begin():
        await s.execute(text("ALTER TABLE account_changes DISABLE TRIGGER account_changes_append_only"))
        await s.execute(text("UPDATE account_changes SET by_user = 'qt.khac' WHERE id = :id"), {"id": target.id})
        await s.execute(text("ALTER TABLE account_changes ENABLE TRIGGER account_changes_append_only"))
    broken = await starter(client, fresh.url, "users", "trail", "--verify")
    assert broken.returncode == 1
    assert f"account trail broken at row {target.id} (reset of {sample.FINANCE_USERS[0]} by qt.khac" in broken.stderr
    assert "edited" in broken.stderr


# ------------------------------------------------------------------ payout batches are signed by the front door


async def test_a_batch_no_front_door_signed_selects_nothing(client, sessions, settings, task_queue):
    (h,) = await enroll(client, sessions, task_queue, make_households(1, beneficiary_group="poor"))
    await drive_one(client, sessions, h, payouts=False)
    async with sessions() as s:
        actor = await users_db.require_actor(s, sample.FINANCE_USERS[0])
        rows = await s.scalar(select(func.count()).where(audit_log.c.household_code == h.code))
    selection = BatchSelection(codes=[h.code])
    inp = PayoutBatchInput(
        batch_id=f"forged-{uuid.uuid4().hex[:8]}",
        action=BatchAction.AUTHORISE,
        tranche=1,
        selection=selection,
        actor=actor,
        evidence=["BATCH"],
    )

    async def refused(batch: PayoutBatchInput, workflow_id: str | None = None) -> str:
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(
                PayoutBatchWorkflow.run,
                batch,
                task_queue=task_queue,
                id=workflow_id or f"payout-batch-{batch.batch_id}",
            )
        cause = failed.value.cause.cause
        assert isinstance(cause, ApplicationError) and cause.type == "Unauthenticated"
        return cause.message

    assert "carries no signed assertion" in await refused(inp)
    signed = payouts.sign_batch(FRONT_DOOR, inp)
    # The assertion of one batch, replayed under another batch workflow's id, or with a wider selection.
    assert "was signed for" in await refused(signed, f"payout-batch-other-{uuid.uuid4().hex[:6]}")
    wider = signed.model_copy(update={"selection": BatchSelection(district=h.district)})
    assert "input is not the input the assertion was signed for" in await refused(wider)
    async with sessions() as s:
        assert await s.scalar(select(func.count()).where(audit_log.c.household_code == h.code)) == rows
    assert (await household_state(client, h.code)).tranches[0].status is TrancheStatus.DUE

    # Through the front door: the officer proves who they are, the command line signs the batch.
    args = (
        "finance",
        "batch",
        "authorise",
        "--tranche",
        "1",
        "--code",
        h.code,
        "--as",
        sample.FINANCE_USERS[0],
        "--ref",
        uuid.uuid4().hex[:8],
        "--json",
    )
    unproved = await starter(client, settings.database_url, *args, task_queue=task_queue)
    assert unproved.returncode == 1 and "Unauthenticated" in unproved.stderr
    done = await starter(
        client,
        settings.database_url,
        *args,
        "--token-stdin",
        task_queue=task_queue,
        stdin=await token_for(sessions, sample.FINANCE_USERS[0]) + "\n",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert (result["progress"]["done"], result["progress"]["failed"]) == (1, 0), result["items"]
    assert (await household_state(client, h.code)).tranches[0].status is TrancheStatus.AUTHORISED


async def test_the_web_apps_payout_batch_is_signed_for_the_signed_in_officer(web, client, sessions):
    from tests.test_web_pages import browser

    ref = f"{uuid.uuid4().hex[:8]}/QĐ-UBND"
    await finance_ops.add_decision(
        sessions, sample.PROVINCE_USER, "270/QĐ-UBND", supplements=None, decided_on=None, note=None
    )
    await finance_ops.add_decision(
        sessions, sample.PROVINCE_USER, ref, supplements="270/QĐ-UBND", decided_on=None, note=None
    )
    (h,) = await enroll(
        client,
        sessions,
        web["task_queue"],
        make_households(1, decision_ref=ref, beneficiary_group="poor", programme=""),
    )
    await drive_one(client, sessions, h, payouts=False)
    async with browser(web["app"], sessions, sample.FINANCE_USERS[0]) as (c, csrf):
        done = await c.post(
            "/finance/batch",
            data={"csrf": csrf, "action": "authorise", "tranche": "1", "decision": ref, "evidence": "Lệnh chi web"},
        )
    assert done.status_code == 200 and "1 done" in done.text, done.text[-2000:]
    assert (await household_state(client, h.code)).tranches[0].status is TrancheStatus.AUTHORISED


async def test_only_an_administrator_changes_accounts_whatever_the_front_door(sessions):
    """The rule lives with the change, not in the `users` command: called by anything else as a finance officer
    (or a disabled administrator), every account change is refused and nothing is written or recorded."""
    async with sessions() as s:
        before = await s.scalar(select(func.count()).select_from(account_changes))
    officer = sample.FINANCE_USERS[0]
    new = {
        "user_id": f"x.{uuid.uuid4().hex[:6]}",
        "full_name": "X",
        "role": "commune_officer",
        "agency": "UBND",
        "province": sample.PROVINCE,
        "district": None,
        "commune": None,
    }
    changes = [
        lambda s: accounts.add_user(s, officer, new, PASSWORD, signer=FRONT_DOOR),
        lambda s: accounts.reset_password(s, officer, sample.ADMIN_USER, PASSWORD, signer=FRONT_DOOR),
        lambda s: accounts.set_active(s, officer, sample.ADMIN_USER, False, signer=FRONT_DOOR),
        lambda s: accounts.issue_token(s, officer, officer, "mine", signer=FRONT_DOOR),
        lambda s: accounts.revoke_token(s, officer, officer, "mine", signer=FRONT_DOOR),
    ]
    for change in changes:
        with pytest.raises(Refusal, match="only an administrator changes accounts"):
            async with sessions() as s, s.begin():
                await change(s)
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(account_changes)) == before
        assert (await users_db.get(s, sample.ADMIN_USER)).active
