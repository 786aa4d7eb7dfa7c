"""Table definitions for queries. The DDL (with its constraints and triggers) is in migrations/."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("full_name", Text),
    Column("role", Text),
    Column("agency", Text),
    Column("province", Text),
    Column("district", Text),
    Column("commune", Text),
    Column("active", Boolean),
    Column("created_at", DateTime(timezone=True)),
)

workflow_policies = Table(
    "workflow_policies",
    metadata,
    Column("version", Text, primary_key=True),
    Column("effective_from", Date),
    Column("document", JSONB),
    Column("created_at", DateTime(timezone=True)),
)

support_amounts = Table(
    "support_amounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("support_type", Text),
    Column("beneficiary_group", Text),
    Column("amount", BigInteger),
    Column("effective_from", Date),
    Column("effective_to", Date),
    Column("legal_basis", Text),
)

import_batches = Table(
    "import_batches",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("file_name", Text),
    Column("file_sha256", Text),
    Column("row_count", Integer),
    Column("imported_by", Text),
    Column("imported_at", DateTime(timezone=True)),
    Column("assertion", JSONB),  # the front door's assertion over the file (0018); None before
)

households = Table(
    "households",
    metadata,
    Column("code", Text, primary_key=True),
    Column("head_of_household", Text),
    Column("cccd", Text),
    Column("province", Text),
    Column("district", Text),
    Column("commune", Text),
    Column("beneficiary_group", Text),
    Column("support_type", Text),
    Column("decision_ref", Text),
    Column("workflow_id", Text),
    Column("import_batch_id", BigInteger),
    Column("stage", Text),
    Column("stage_since", DateTime(timezone=True)),
    Column("last_seq", Integer),
    Column("entitlement", BigInteger),
    Column("reserved", BigInteger),
    Column("paid", BigInteger),
    Column("funding_source", Text),
    Column("programme", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("old_district", Text),
    Column("old_commune", Text),
    Column("moved_under", Text),
    Column("moved_at", DateTime(timezone=True)),
    Column("payee", Text),  # None: the head of household (a change approved may name another)
)

household_changes = Table(
    "household_changes",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("household_code", Text),
    Column("kind", Text),
    Column("old_value", Text),
    Column("new_value", Text),
    Column("request_audit_id", BigInteger),
    Column("decision_audit_id", BigInteger),
    Column("requested_by", Text),
    Column("approved_by", Text),
    Column("at", DateTime(timezone=True)),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("household_code", Text),
    Column("seq", Integer),
    Column("idempotency_key", Text),
    Column("step", Text),
    Column("from_stage", Text),
    Column("to_stage", Text),
    Column("actor_user_id", Text),
    Column("actor_role", Text),
    Column("actor_agency", Text),
    Column("evidence", JSONB),
    Column("reason", Text),
    Column("amount", BigInteger),
    Column("transfer_id", BigInteger),
    Column("occurred_at", DateTime(timezone=True)),
    Column("recorded_at", DateTime(timezone=True)),
    Column("prev_hash", Text),
    Column("hash", Text),
    Column("assertion", JSONB),
    Column("signed_input", JSONB),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("holder", Text),
    Column("public_key", Text),
    Column("valid_from", DateTime(timezone=True)),
    Column("valid_until", DateTime(timezone=True)),
    Column("added_at", DateTime(timezone=True)),
)

payout_batch_runs = Table(
    "payout_batch_runs",
    metadata,
    Column("nonce", Text, primary_key=True),
    Column("batch_id", Text),
    Column("workflow_id", Text),
    Column("run_id", Text),
    Column("signed_by", Text),
    Column("started_at", DateTime(timezone=True)),
)

payout_batch_tickets = Table(
    "payout_batch_tickets",
    metadata,
    Column("nonce", Text, primary_key=True),
    Column("household_code", Text, primary_key=True),
    Column("tranche", Integer),
    Column("action", Text),
    Column("run_id", Text),
    Column("issued_at", DateTime(timezone=True)),
)

account_changes = Table(
    "account_changes",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("at", DateTime(timezone=True)),
    Column("by_user", Text),
    Column("action", Text),
    Column("user_id", Text),
    Column("details", JSONB),
    Column("prev_hash", Text),
    Column("hash", Text),
    Column("assertion", JSONB),
)

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("code", Text),
    Column("name", Text),
    Column("kind", Text),
    Column("debits_must_not_exceed_credits", Boolean),
    Column("credits_must_not_exceed_debits", Boolean),
    Column("debits_pending", BigInteger),
    Column("debits_posted", BigInteger),
    Column("credits_pending", BigInteger),
    Column("credits_posted", BigInteger),
    Column("created_at", DateTime(timezone=True)),
)

funding_sources = Table(
    "funding_sources",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text),
    Column("category", Text),
    Column("is_state_budget", Boolean),
    Column("account_id", BigInteger),
    Column("origin_account_id", BigInteger),
    Column("rules", JSONB),
    Column("priority", Integer),
    Column("created_at", DateTime(timezone=True)),
)

ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("idempotency_key", Text),
    Column("kind", Text),
    Column("debit_account_id", BigInteger),
    Column("credit_account_id", BigInteger),
    Column("amount", BigInteger),
    Column("pending_id", BigInteger),
    Column("household_code", Text),
    Column("memo", Text),
    Column("code", Text),
    Column("tranche", SmallInteger),
    Column("created_at", DateTime(timezone=True)),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("idempotency_key", Text),
    Column("household_code", Text),
    Column("kind", Text),
    Column("channel", Text),
    Column("recipient", Text),
    Column("subject", Text),
    Column("body", Text),
    Column("status", Text),
    Column("attempts", Integer),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("sent_at", DateTime(timezone=True)),
)

allocation_policies = Table(
    "allocation_policies",
    metadata,
    Column("programme", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("effective_from", Date),
    Column("document", JSONB),
    Column("created_at", DateTime(timezone=True)),
)

tranche_plans = Table(
    "tranche_plans",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("support_type", Text),
    Column("beneficiary_group", Text),
    Column("effective_from", Date),
    Column("document", JSONB),
    Column("legal_basis", Text),
)

household_tranches = Table(
    "household_tranches",
    metadata,
    Column("household_code", Text, primary_key=True),
    Column("tranche", SmallInteger, primary_key=True),
    Column("percent", SmallInteger),
    Column("milestone", Text),
    Column("amount", BigInteger),
    Column("status", Text),
    Column("authorised_by", Text),
    Column("released_by", Text),
    Column("attempts", Integer),
    Column("updated_at", DateTime(timezone=True)),
)

payments = Table(
    "payments",
    metadata,
    Column("payment_id", Text, primary_key=True),
    Column("household_code", Text),
    Column("tranche", SmallInteger),
    Column("attempt", Integer),
    Column("amount", BigInteger),
    Column("payee", Text),
    Column("channel", Text),
    Column("status", Text),
    Column("overdue", Boolean),
    Column("bank_ref", Text),
    Column("reason", Text),
    Column("released_by", Text),
    Column("sent_at", DateTime(timezone=True)),
    Column("resolved_at", DateTime(timezone=True)),
)

decisions = Table(
    "decisions",
    metadata,
    Column("ref", Text, primary_key=True),
    Column("kind", Text),
    Column("supplements", Text),
    Column("decided_on", Date),
    Column("note", Text),
    Column("registered_at", DateTime(timezone=True)),
)

household_loans = Table(
    "household_loans",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("idempotency_key", Text),
    Column("household_code", Text),
    Column("lender", Text),
    Column("amount", BigInteger),
    Column("status", Text),
    Column("recorded_by", Text),
    Column("note", Text),
    Column("recorded_at", DateTime(timezone=True)),
)

user_credentials = Table(
    "user_credentials",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("password_hash", Text),
    Column("changed_at", DateTime(timezone=True)),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("token_hash", Text, primary_key=True),
    Column("user_id", Text),
    Column("csrf_token", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True)),
    Column("assertion", JSONB),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Text),
    Column("name", Text),
    Column("token_hash", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

login_attempts = Table(
    "login_attempts",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("user_id", Text),
    Column("client", Text),
    Column("ok", Boolean),
    Column("at", DateTime(timezone=True)),
)

programme_deadlines = Table(
    "programme_deadlines",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text),
    Column("due_on", Date),
    Column("support_types", ARRAY(Text)),
    Column("beneficiary_groups", ARRAY(Text)),
    Column("legal_basis", Text),
)

workflow_histories = Table(
    "workflow_histories",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("workflow_id", Text),
    Column("run_id", Text),
    Column("workflow_type", Text),
    Column("household_code", Text),
    Column("status", Text),
    Column("started_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Column("events", Integer),
    Column("key_ids", ARRAY(Text)),
    Column("history", LargeBinary),
    Column("sha256", Text),
    Column("key_id", Text),
    Column("signature", Text),
    Column("archived_at", DateTime(timezone=True)),
)

witness_checkpoints = Table(
    "witness_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("made_at", DateTime(timezone=True)),
    Column("body", JSONB),
    Column("prev_hash", Text),
    Column("hash", Text),
    Column("key_id", Text),
    Column("signature", Text),
    Column("recorded_at", DateTime(timezone=True)),
)

audit_chain_heads = Table(
    "audit_chain_heads",
    metadata,
    Column("household_code", Text, primary_key=True),
    Column("seq", Integer),
    Column("hash", Text),
    Column("moved_at", DateTime(timezone=True)),
)

gazetteers = Table(
    "gazetteers",
    metadata,
    Column("version", Text, primary_key=True),
    Column("province", Text),
    Column("source", Text),
    Column("sha256", Text),
    Column("document", JSONB),
    Column("loaded_by", Text),
    Column("loaded_at", DateTime(timezone=True)),
)

admin_units = Table(
    "admin_units",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text),
    Column("level", Text),
    Column("parent", Text),
    Column("valid_from", Date),
    Column("valid_until", Date),
    Column("generated", Boolean),
    Column("gazetteer", Text),
)

reorganisations = Table(
    "reorganisations",
    metadata,
    Column("basis", Text, primary_key=True),
    Column("title", Text),
    Column("effective", Date),
    Column("gazetteer", Text),
)

successions = Table(
    "successions",
    metadata,
    Column("basis", Text, primary_key=True),
    Column("from_unit", Text, primary_key=True),
    Column("to_unit", Text, primary_key=True),
    Column("households", ARRAY(Text)),
    Column("generated", Boolean),
)

handovers = Table(
    "handovers",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("idempotency_key", Text),
    Column("basis", Text),
    Column("source", Text),
    Column("from_unit", Text),
    Column("to_unit", Text),
    Column("to_source", Text),
    Column("received", BigInteger),
    Column("reserved", BigInteger),
    Column("paid", BigInteger),
    Column("reimbursed", BigInteger),
    Column("handed_over", BigInteger),
    Column("receivable", BigInteger),
    Column("transfer_id", BigInteger),
    Column("findings", JSONB),
    Column("recorded_by", Text),
    Column("recorded_at", DateTime(timezone=True)),
)

# Other programmes' lists and double-support overrides (migration 0017): keyed hashes of CCCD only.
other_programme_lists = Table(
    "other_programme_lists",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("programme", Text),
    Column("name", Text),
    Column("file_name", Text),
    Column("file_sha256", Text),
    Column("row_count", Integer),
    Column("imported_by", Text),
    Column("imported_at", DateTime(timezone=True)),
)

other_programme_beneficiaries = Table(
    "other_programme_beneficiaries",
    metadata,
    Column("list_id", BigInteger),
    Column("programme", Text, primary_key=True),
    Column("cccd_hmac", Text, primary_key=True),
    Column("supported_year", Integer),
    Column("note", Text),
)

household_match_keys = Table(
    "household_match_keys",
    metadata,
    Column("household_code", Text, primary_key=True),
    Column("cccd_hmac", Text),
    Column("keyed_at", DateTime(timezone=True)),
)

double_support_overrides = Table(
    "double_support_overrides",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("household_code", Text),
    Column("programme", Text),
    Column("audit_id", BigInteger),
    Column("by_user", Text),
    Column("reason", Text),
    Column("evidence", ARRAY(Text)),
    Column("at", DateTime(timezone=True)),
    Column("recorded_at", DateTime(timezone=True)),
)

# After the money (migration 0019): payment verification plans, their answers, grievances.
verification_plans = Table(
    "verification_plans",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("name", Text),
    Column("decision_ref", Text),
    Column("district", Text),
    Column("commune", Text),
    Column("paid_from", Date),
    Column("paid_to", Date),
    Column("full_list", Boolean),
    Column("confidence", Double),
    Column("margin", Double),
    Column("design_factor", Double),
    Column("population", Integer),
    Column("risk_count", Integer),
    Column("sample_size", Integer),
    Column("seed", BigInteger),
    Column("created_by", Text),
    Column("created_at", DateTime(timezone=True)),
)

verification_population = Table(
    "verification_population",
    metadata,
    Column("plan_id", BigInteger, primary_key=True),
    Column("household_code", Text, primary_key=True),
    Column("risk", Text),
)

verification_households = Table(
    "verification_households",
    metadata,
    Column("plan_id", BigInteger, primary_key=True),
    Column("household_code", Text, primary_key=True),
    Column("reason", Text),
)

verification_answers = Table(
    "verification_answers",
    metadata,
    Column("plan_id", BigInteger, primary_key=True),
    Column("household_code", Text, primary_key=True),
    Column("answer", Text),
    Column("amount", BigInteger),
    Column("asked_by", Text),
    Column("channel", Text),
    Column("note", Text),
    Column("answered_at", DateTime(timezone=True)),
)

grievances = Table(
    "grievances",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("idempotency_key", Text),
    Column("household_code", Text),
    Column("category", Text),
    Column("said", Text),
    Column("said_by", Text),
    Column("evidence", ARRAY(Text)),
    Column("responsible", Text),
    Column("due_on", Date),
    Column("opened_by", Text),
    Column("opened_at", DateTime(timezone=True)),
    Column("plan_id", BigInteger),
)

grievance_resolutions = Table(
    "grievance_resolutions",
    metadata,
    Column("grievance_id", BigInteger, primary_key=True),
    Column("outcome", Text),
    Column("resolution", Text),
    Column("evidence", ARRAY(Text)),
    Column("resolved_by", Text),
    Column("resolved_at", DateTime(timezone=True)),
)
