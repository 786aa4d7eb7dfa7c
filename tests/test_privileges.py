"""Least privilege: the worker and the web app log in as a role that owns nothing, and PostgreSQL itself
refuses it every way of rewriting history: UPDATE, DELETE or TRUNCATE of the audit log and the ledger's
transfers, switching their triggers off, `session_replication_role`. The append-only triggers answer with
the same SQLSTATE (42501), so each refusal here is also matched by PostgreSQL's own permission message: the
privilege check refuses before any trigger runs. That the role can take every normal step, the rest of the
suite shows (every test writes through it)."""

from __future__ import annotations

import asyncio
from datetime import date

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from core.settings import Settings
from db.policy import current_workflow_policy
from db.schema import audit_log, households, ledger_transfers
from operations import sample
from operations.policies import add_version
from runtime.migrate import migrate, upgrade
from runtime.stack import EmbeddedPostgres, Stack, free_port
from tests.conftest import APP_ROLE, drive_one, enroll, make_households, running_worker

INSUFFICIENT_PRIVILEGE = "42501"
APPEND_ONLY = ("audit_log", "ledger_transfers", "household_loans", "restored_steps")


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
async def settled(client, sessions, settings):
    """One household taken through every step, payouts included, by the worker and the commands, which log
    in as the application's role: a normal step needs nothing more than it holds."""
    async with running_worker(client, sessions, settings) as tq:
        (h,) = await enroll(client, sessions, tq, make_households(1))
        await drive_one(client, sessions, h)
        await client.get_workflow_handle(h.workflow_id).result()
    return h


@pytest.fixture
async def app_conn(settings, settled):
    """A raw connection as the application's role, once a household has audit rows and transfers."""
    conn = await asyncpg.connect(_dsn(settings.asyncpg_url))
    yield conn
    await conn.close()


@pytest.fixture
async def owner_conn(settings, settled):
    conn = await asyncpg.connect(_dsn(settings.owner_asyncpg_url))
    yield conn
    await conn.close()


async def _refused(conn: asyncpg.Connection, sql: str, message: str) -> None:
    """`sql` fails with insufficient_privilege and PostgreSQL's own message (not a trigger's), in a
    transaction rolled back whatever happens."""
    tx = conn.transaction()
    await tx.start()
    try:
        with pytest.raises(asyncpg.PostgresError) as e:
            await conn.execute(sql)
    finally:
        await tx.rollback()
    assert e.value.sqlstate == INSUFFICIENT_PRIVILEGE, (sql, e.value.sqlstate, str(e.value))
    assert str(e.value) == message, sql


async def _ids(conn: asyncpg.Connection) -> tuple[int, int]:
    audit_id = await conn.fetchval("SELECT min(id) FROM audit_log")
    transfer_id = await conn.fetchval("SELECT min(id) FROM ledger_transfers")
    assert audit_id is not None and transfer_id is not None
    return audit_id, transfer_id


async def test_the_application_role_takes_every_step(sessions, settled):
    async with sessions() as s:
        stage = await s.scalar(select(households.c.stage).where(households.c.code == settled.code))
        rows = await s.scalar(select(func.count()).where(audit_log.c.household_code == settled.code))
        moved = await s.scalar(select(func.count()).where(ledger_transfers.c.household_code == settled.code))
        user = await s.scalar(select(func.current_user()))
    assert (stage, user) == ("closed", APP_ROLE)
    assert rows >= 8 and moved >= 4


def test_the_worker_logs_in_as_the_application_role_not_as_the_owner(settings):
    assert settings.app_role == APP_ROLE
    assert settings.owner_role != settings.app_role
    assert make_url(settings.asyncpg_url).username == APP_ROLE
    env = Stack(settings).env()  # what 'stack up' hands the worker and the web app
    assert make_url(env["DATABASE_URL"]).username == APP_ROLE
    assert not any(settings.owner_url in value for value in env.values())


async def test_the_application_role_owns_nothing_and_holds_no_power(app_conn):
    role = await app_conn.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles "
        "WHERE rolname = current_user"
    )
    assert dict(role) == dict.fromkeys(role.keys(), False)
    owned = await app_conn.fetchval(
        "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid) + (SELECT count(*) FROM pg_proc "
        "WHERE proowner = r.oid) + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid) + "
        "(SELECT count(*) FROM pg_database WHERE datdba = r.oid) FROM pg_roles r WHERE rolname = current_user"
    )
    assert owned == 0
    # Not a member of the owner's role either (membership would carry its rights).
    assert (
        await app_conn.fetchval(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = current_user"
        )
        == 0
    )


async def test_the_application_cannot_update_or_delete_an_audit_row_or_a_transfer(app_conn):
    audit_id, transfer_id = await _ids(app_conn)
    for sql, table in (
        (f"UPDATE audit_log SET reason = 'sửa sau' WHERE id = {audit_id}", "audit_log"),
        (f"DELETE FROM audit_log WHERE id = {audit_id}", "audit_log"),
        (f"UPDATE ledger_transfers SET amount = amount - 1 WHERE id = {transfer_id}", "ledger_transfers"),
        (f"DELETE FROM ledger_transfers WHERE id = {transfer_id}", "ledger_transfers"),
        ("UPDATE household_loans SET amount = 1", "household_loans"),
        ("DELETE FROM restored_steps", "restored_steps"),
    ):
        await _refused(app_conn, sql, f"permission denied for table {table}")


async def test_the_application_cannot_truncate_alter_or_switch_the_triggers_off(app_conn):
    for table in APPEND_ONLY:
        await _refused(app_conn, f"TRUNCATE {table}", f"permission denied for table {table}")
        for sql in (
            f"ALTER TABLE {table} DISABLE TRIGGER USER",
            f"ALTER TABLE {table} DISABLE TRIGGER ALL",
            f"ALTER TABLE {table} ADD COLUMN note text",
            f"DROP TABLE {table}",
        ):
            await _refused(app_conn, sql, f"must be owner of table {table}")
    await _refused(
        app_conn, "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only", "must be owner of table audit_log"
    )
    await _refused(
        app_conn,
        "DROP TRIGGER ledger_transfers_append_only ON ledger_transfers",
        "must be owner of relation ledger_transfers",
    )
    await _refused(
        app_conn,
        "CREATE OR REPLACE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "permission denied for schema public",
    )
    await _refused(
        app_conn, "ALTER FUNCTION refuse_change() RENAME TO refused", "must be owner of function refuse_change"
    )
    await _refused(
        app_conn,
        "SET session_replication_role = replica",
        'permission denied to set parameter "session_replication_role"',
    )
    await _refused(
        app_conn,
        "SET LOCAL session_replication_role = replica",
        'permission denied to set parameter "session_replication_role"',
    )
    await _refused(app_conn, "CREATE TABLE audit_log_shadow (id bigint)", "permission denied for schema public")


async def test_the_application_cannot_write_a_balance_or_redirect_a_source(app_conn):
    """Balances follow transfers only (the trigger runs as the owner); a source's accounts never change."""
    await _refused(
        app_conn,
        "UPDATE ledger_accounts SET credits_posted = credits_posted + 1",
        "permission denied for table ledger_accounts",
    )
    await _refused(
        app_conn,
        "INSERT INTO ledger_accounts (code, name, kind, credits_posted) VALUES ('SRC:FORGED', 'x', 'source', 1000000)",
        "permission denied for table ledger_accounts",
    )
    await _refused(
        app_conn,
        "UPDATE funding_sources SET account_id = origin_account_id",
        "permission denied for table funding_sources",
    )
    await _refused(
        app_conn, "UPDATE workflow_policies SET document = '{}'", "permission denied for table workflow_policies"
    )
    await _refused(app_conn, "DELETE FROM households", "permission denied for table households")


async def test_the_application_cannot_forge_a_restore_or_change_what_an_instruction_said(app_conn):
    """Restores run as the owner: the worker's login may neither write a restore mark (which would remap a
    household's transfers) nor move the transfers' id sequence; a sent instruction's amount and payee stay."""
    await _refused(
        app_conn,
        "INSERT INTO restored_steps (household_code) VALUES ('X')",
        "permission denied for table restored_steps",
    )
    await _refused(
        app_conn,
        "SELECT setval('ledger_transfers_id_seq', 1)",
        "permission denied for sequence ledger_transfers_id_seq",
    )
    for column in ("amount = 1", "payee = 'Kẻ Mạo Danh'"):
        await _refused(app_conn, f"UPDATE payments SET {column}", "permission denied for table payments")


async def test_the_application_cannot_publish_a_policy(app_conn, sessions):
    """Who may act is policy data (migration 0010): a process holding the application's login cannot publish a
    version without segregation of duties, with commune officers as policy admins, in force today. Only the
    owner inserts versions (`policy apply` connects as the owner for that)."""
    forged = (
        "INSERT INTO workflow_policies (version, effective_from, document) "
        'SELECT \'forged-9999.1\', current_date, document || \'{"version": "forged-9999.1", '
        '"distinct_actors": [], "distinct_per_tranche": [], "importer_may_not": []}\'::jsonb '
        "FROM workflow_policies ORDER BY effective_from DESC LIMIT 1"
    )
    await _refused(app_conn, forged, "permission denied for table workflow_policies")
    # Through the publishing code too: an administrator's name does not make the application's login the owner.
    async with sessions() as s:
        current = await current_workflow_policy(s, date.today())
    lax = current.model_copy(
        update={
            "version": "forged-9999.2",
            "distinct_per_tranche": [],
            "importer_may_not": [],
            "policy_admin_roles": [*current.policy_admin_roles, "commune_officer"],
        }
    )
    with pytest.raises(DBAPIError, match="permission denied for table workflow_policies"):
        await add_version(sessions, lax, date.today(), sample.ADMIN_USER)
    async with sessions() as s:
        assert (await current_workflow_policy(s, date.today())).version == current.version


async def test_the_application_cannot_change_a_registered_payee_or_place(app_conn, settled):
    """Migration 0010: a step updates only the register columns it writes (stage, money); the payee, the CCCD,
    the place and the support type are written once, at import, so the application's login cannot redirect a
    payment (the instruction is built from this row). Migration 0015 lets a reorganisation move a household: the
    place may change then, and only then, to the unit the gazetteer's succession names (a trigger); migration
    0016 lets the support type and the payee change only by an approved change request (a trigger)."""
    for column in (
        "head_of_household = 'Kẻ Mạo Danh'",
        "cccd = '001099000001'",
        "old_commune = 'Khác'",
    ):
        await _refused(
            app_conn,
            f"UPDATE households SET {column} WHERE code = '{settled.code}'",
            "permission denied for table households",
        )
    for change in ("commune = 'Khác'", "district = NULL, commune = 'Khác', moved_under = NULL"):
        tx = app_conn.transaction()
        await tx.start()
        try:
            with pytest.raises(asyncpg.PostgresError) as e:
                await app_conn.execute(f"UPDATE households SET {change} WHERE code = '{settled.code}'")
        finally:
            await tx.rollback()
        assert e.value.sqlstate == "23000" and "only by a move" in str(e.value), change
    # Migration 0016: the support type and the payee change only as an approved change request says (a row of
    # household_changes written in the same transaction, standing on the request's and the decision's audit rows).
    for change, what in (
        ("support_type = CASE support_type WHEN 'repair' THEN 'new_build' ELSE 'repair' END", "support type"),
        ("payee = 'Kẻ Mạo Danh'", "payee"),
    ):
        tx = app_conn.transaction()
        await tx.start()
        try:
            with pytest.raises(asyncpg.PostgresError) as e:
                await app_conn.execute(f"UPDATE households SET {change} WHERE code = '{settled.code}'")
        finally:
            await tx.rollback()
        assert e.value.sqlstate == "23000" and f"its {what} changes only by an approved change" in str(e.value)
    first = await app_conn.fetchval(f"SELECT min(id) FROM audit_log WHERE household_code = '{settled.code}'")
    with pytest.raises(asyncpg.PostgresError, match="stands on its request and its approval"):
        await app_conn.execute(
            "INSERT INTO household_changes (household_code, kind, old_value, new_value, request_audit_id, "
            "decision_audit_id, requested_by, approved_by) "
            f"VALUES ('{settled.code}', 'payee', NULL, 'Kẻ Mạo Danh', {first}, {first}, 'tinh.luong', 'qt.admin')"
        )
    tx = app_conn.transaction()
    await tx.start()
    try:  # what a step writes stays writable
        done = await app_conn.execute(f"UPDATE households SET updated_at = now() WHERE code = '{settled.code}'")
        assert done == "UPDATE 1"
    finally:
        await tx.rollback()


async def test_a_temporary_table_cannot_stand_in_for_the_audit_log_in_the_link_check(app_conn):
    """The trigger functions name their schema with pg_temp last: a temporary `audit_log` the application
    creates (it may create temporary tables) does not make a forged row's link look right."""
    tx = app_conn.transaction()
    await tx.start()
    try:
        last = await app_conn.fetchrow("SELECT * FROM audit_log ORDER BY id DESC LIMIT 1")
        await app_conn.execute("CREATE TEMPORARY TABLE audit_log (household_code text, seq integer, hash text)")
        await app_conn.execute(
            "INSERT INTO pg_temp.audit_log (household_code, seq, hash) "
            f"VALUES ('{last['household_code']}', {last['seq']}, repeat('a', 64))"
        )
        with pytest.raises(asyncpg.CheckViolationError, match="prev_hash does not match"):
            await app_conn.execute(
                "INSERT INTO public.audit_log (household_code, seq, idempotency_key, step, from_stage, to_stage, "
                "actor_user_id, actor_role, actor_agency, occurred_at, prev_hash, hash) SELECT household_code, "
                f"seq + 1, 'forged-temp', step, from_stage, to_stage, actor_user_id, actor_role, actor_agency, "
                f"occurred_at, repeat('a', 64), repeat('b', 64) FROM public.audit_log WHERE id = {last['id']}"
            )
    finally:
        await tx.rollback()


async def test_the_owner_is_refused_by_the_triggers_but_can_switch_them_off(owner_conn):
    """The owner is who migrates; the triggers still refuse it an edit, as `tests/test_audit*.py` rely on
    it to tamper on purpose (trigger off, in a rolled-back transaction)."""
    audit_id, transfer_id = await _ids(owner_conn)
    for sql, message in (
        (
            f"UPDATE audit_log SET reason = 'x' WHERE id = {audit_id}",
            "audit_log is append-only: UPDATE refused (corrections are new entries)",
        ),
        (
            f"DELETE FROM ledger_transfers WHERE id = {transfer_id}",
            "ledger_transfers is append-only: DELETE refused (corrections are new entries)",
        ),
    ):
        await _refused(owner_conn, sql, message)
    tx = owner_conn.transaction()
    await tx.start()
    try:
        await owner_conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        assert await owner_conn.execute(f"UPDATE audit_log SET reason = 'x' WHERE id = {audit_id}") == "UPDATE 1"
    finally:
        await tx.rollback()


@pytest.mark.servers  # starts servers of its own
async def test_a_state_folder_from_before_gets_its_application_role_on_stack_up(tmp_path):
    """A cluster an older version set up (`housing` owns everything, migrated to 0006, still running): the
    stack's start creates the application's role, the migrations grant it, and the application connects as
    it, with no more than it needs."""
    old = EmbeddedPostgres(tmp_path / "pg", "127.0.0.1", free_port(), "housing", "housing", "housing", durable=False)
    old.start()
    try:
        await asyncio.to_thread(upgrade, _asyncpg(old.url), "0006", app_role="housing")
        port = old.port
        s = Settings(
            state_dir=tmp_path,
            pg_durable=False,
            database_url=f"postgresql://housing_app:housing_app@127.0.0.1:{port}/housing",
            database_owner_url=f"postgresql://housing:housing@127.0.0.1:{port}/housing",
        )
        stack = Stack(s)
        assert stack.postgres().start() is False, "the running server is reused"
        await asyncio.to_thread(migrate, s)
        conn = await asyncpg.connect(_dsn(s.asyncpg_url))
        try:
            assert await conn.fetchval("SELECT current_user") == "housing_app"
            assert await conn.fetchval("SELECT count(*) FROM workflow_policies") >= 2
            await _refused(conn, "UPDATE audit_log SET reason = 'x'", "permission denied for table audit_log")
            await _refused(
                conn, "ALTER TABLE ledger_transfers DISABLE TRIGGER USER", "must be owner of table ledger_transfers"
            )
        finally:
            await conn.close()
    finally:
        old.destroy()


def _asyncpg(url: str) -> str:
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
