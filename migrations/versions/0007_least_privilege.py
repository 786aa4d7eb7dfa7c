"""Least privilege: the application's role gets only what the engine does, table by table.

Migrations run as the schema owner (DATABASE_OWNER_URL). The worker and the web app log in as another role
(DATABASE_URL's user, `housing_app` by default) that owns nothing, so PostgreSQL itself refuses it ALTER,
DROP, TRUNCATE, `DISABLE TRIGGER` and `session_replication_role` (superuser only). It gets SELECT on every
table and, where the engine writes, INSERT; UPDATE only where the engine really updates rows (read models,
outbox, users and their credentials, sessions and tokens, payments and tranches); DELETE nowhere. The audit
log, the ledger's transfers, the loans and the restored-step marks are INSERT-only. Two column grants:

- `ledger_accounts`: INSERT of an account's code, name, kind and flags only (never its balances), and
  UPDATE of `name` only, because `SELECT … FOR UPDATE` (the engine locks the sources it reserves from)
  needs UPDATE on some column. The balances are written by the transfer trigger alone, which runs as the
  owner (SECURITY DEFINER).
- `funding_sources`: UPDATE of name, rules and priority (what `finance source-add` changes), never the
  accounts a source points to, its category or its budget status.

Sequences: USAGE where the application inserts; on `ledger_transfers_id_seq` also SELECT and UPDATE for
`audit restore`, which moves it past the ids it gives back.

The trigger functions that read or write tables name their schema in a fixed search_path with pg_temp
last, so a temporary table of the same name cannot stand in for the audit log or the accounts.

Later migrations: `ALTER DEFAULT PRIVILEGES` (for the owner running this, in this schema) gives the
application SELECT on every table and USAGE on every sequence the owner creates from now on; a migration
that adds a table grants its writes with `migrations.privileges.grant`.

The role itself is created outside the migrations (roles belong to the server): by the embedded stack
(`EmbeddedPostgres._ensure_database`) and by docker-compose's init script (deploy/postgres-init/). When one
role runs both the migrations and the application (DATABASE_URL alone), nothing is granted; to split the
roles later, create the application's role, then `alembic downgrade 0006` and upgrade again as the owner.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from migrations.privileges import grant, ident, separate_app_role

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ACCOUNT_COLUMNS = "code, name, kind, debits_must_not_exceed_credits, credits_must_not_exceed_debits"

TABLES = {
    "users": "SELECT, INSERT, UPDATE",
    "workflow_policies": "SELECT, INSERT",
    "support_amounts": "SELECT",
    "import_batches": "SELECT, INSERT",
    "households": "SELECT, INSERT, UPDATE",
    "audit_log": "SELECT, INSERT",
    "ledger_accounts": f"SELECT, INSERT ({ACCOUNT_COLUMNS}), UPDATE (name)",
    "funding_sources": "SELECT, INSERT, UPDATE (name, rules, priority)",
    "ledger_transfers": "SELECT, INSERT",
    "outbox": "SELECT, INSERT, UPDATE",
    "allocation_policies": "SELECT, INSERT",
    "tranche_plans": "SELECT, INSERT",
    "household_tranches": "SELECT, INSERT, UPDATE",
    # What the engine writes once an instruction is answered; never its amount or payee.
    "payments": "SELECT, INSERT, UPDATE (status, bank_ref, reason, resolved_at, overdue)",
    "decisions": "SELECT, INSERT",
    "household_loans": "SELECT, INSERT",
    "user_credentials": "SELECT, INSERT, UPDATE",
    "web_sessions": "SELECT, INSERT, UPDATE",
    "api_tokens": "SELECT, INSERT, UPDATE",
    "login_attempts": "SELECT, INSERT",
    "programme_deadlines": "SELECT",
    # Restores run as the owner (`audit restore`): the application only reads the marks.
    "restored_steps": "SELECT",
}

SEQUENCES = {
    "import_batches_id_seq": "USAGE",
    "audit_log_id_seq": "USAGE",
    "ledger_accounts_id_seq": "USAGE",
    "ledger_transfers_id_seq": "USAGE",
    "outbox_id_seq": "USAGE",
    "tranche_plans_id_seq": "USAGE",
    "household_loans_id_seq": "USAGE",
    "api_tokens_id_seq": "USAGE",
    "login_attempts_id_seq": "USAGE",
}


def _schema() -> str:
    return op.get_bind().scalar(sa.text("SELECT current_schema()"))


def upgrade() -> None:
    schema = ident(_schema())
    # Nobody but the owner creates objects here (PostgreSQL 15 and later already say so).
    op.execute(f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC")
    op.execute(f"ALTER FUNCTION ledger_apply_transfer() SECURITY DEFINER SET search_path = {schema}, pg_temp")
    op.execute(f"ALTER FUNCTION audit_log_check_link() SET search_path = {schema}, pg_temp")
    grant(TABLES, SEQUENCES)
    role = separate_app_role()
    if role is not None:
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {ident(role)}")
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE ON SEQUENCES TO {ident(role)}")


def downgrade() -> None:
    schema = ident(_schema())
    role = separate_app_role()
    if role is not None:
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE USAGE ON SEQUENCES FROM {ident(role)}")
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE SELECT ON TABLES FROM {ident(role)}")
        op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {ident(role)}")
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {ident(role)}")
    op.execute("ALTER FUNCTION audit_log_check_link() RESET search_path")
    op.execute("ALTER FUNCTION ledger_apply_transfer() SECURITY INVOKER RESET search_path")
