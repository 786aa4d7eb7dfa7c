"""Core schema: users, policies, households read model, hash-chained audit log, two-phase ledger, outbox.

The rules that must hold whatever code writes here live in PostgreSQL: idempotency keys are unique,
the audit log and the transfers are append-only, a transfer moves one positive amount between two
different accounts, a pending transfer is resolved (posted or voided) at most once and only on its own
accounts, account balances follow the transfers (a trigger, not the application), and a funding source
never goes below zero.

Revision ID: 0001
Revises:
"""

from migrations.sql import run_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GROUPS = "('meritorious','poor','near_poor','disaster','other')"
SUPPORT = "('new_build','repair')"
STAGES = "('verification','approval','fund_allocation','construction','acceptance','settlement','closed','cancelled')"

UPGRADE = f"""
CREATE TABLE users (
    user_id     text PRIMARY KEY,
    full_name   text NOT NULL,
    role        text NOT NULL CHECK (role ~ '^[a-z][a-z_]{{1,39}}$'),
    agency      text NOT NULL,
    province    text NOT NULL,
    district    text,
    commune     text,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_commune_needs_district CHECK (commune IS NULL OR district IS NOT NULL)
);

CREATE TABLE workflow_policies (
    version         text PRIMARY KEY,
    effective_from  date NOT NULL UNIQUE,
    document        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Support per house, versioned by effective date (Decision 21/2024/QĐ-TTg and successors).
CREATE TABLE support_amounts (
    id                 serial PRIMARY KEY,
    support_type       text NOT NULL CHECK (support_type IN {SUPPORT}),
    beneficiary_group  text CHECK (beneficiary_group IN {GROUPS}),  -- NULL: every group
    amount             bigint NOT NULL CHECK (amount > 0),
    effective_from     date NOT NULL,
    effective_to       date,
    legal_basis        text NOT NULL,
    CONSTRAINT support_amounts_period CHECK (effective_to IS NULL OR effective_to > effective_from),
    CONSTRAINT support_amounts_one_version UNIQUE NULLS NOT DISTINCT (support_type, beneficiary_group, effective_from)
);

CREATE TABLE import_batches (
    id           bigserial PRIMARY KEY,
    file_name    text NOT NULL,
    file_sha256  char(64) NOT NULL,
    row_count    integer NOT NULL CHECK (row_count >= 0),
    imported_by  text NOT NULL REFERENCES users(user_id),
    imported_at  timestamptz NOT NULL DEFAULT now()
);

-- Read model: one row per household, its current stage and money, for fast SQL reports.
CREATE TABLE households (
    code               text PRIMARY KEY,
    head_of_household  text NOT NULL,
    cccd               char(12) NOT NULL UNIQUE CHECK (cccd ~ '^[0-9]{{12}}$'),
    province           text NOT NULL,
    district           text NOT NULL,
    commune            text NOT NULL,
    beneficiary_group  text NOT NULL CHECK (beneficiary_group IN {GROUPS}),
    support_type       text NOT NULL CHECK (support_type IN {SUPPORT}),
    decision_ref       text NOT NULL,
    workflow_id        text NOT NULL UNIQUE,
    import_batch_id    bigint REFERENCES import_batches(id),
    stage              text NOT NULL DEFAULT 'verification' CHECK (stage IN {STAGES}),
    stage_since        timestamptz NOT NULL DEFAULT now(),
    last_seq           integer NOT NULL DEFAULT 0,
    entitlement        bigint NOT NULL DEFAULT 0 CHECK (entitlement >= 0),
    reserved           bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    paid               bigint NOT NULL DEFAULT 0 CHECK (paid >= 0),
    funding_source     text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX households_district_stage ON households (district, stage);
CREATE INDEX households_stage ON households (stage);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused (corrections are new entries)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- One hash chain per household: each row carries the hash of the row before it.
CREATE TABLE audit_log (
    id               bigserial PRIMARY KEY,
    household_code   text NOT NULL REFERENCES households(code),
    seq              integer NOT NULL CHECK (seq >= 1),
    idempotency_key  text NOT NULL,
    step             text NOT NULL,
    from_stage       text NOT NULL CHECK (from_stage IN {STAGES}),
    to_stage         text NOT NULL CHECK (to_stage IN {STAGES}),
    actor_user_id    text NOT NULL REFERENCES users(user_id),
    actor_role       text NOT NULL,
    actor_agency     text NOT NULL,
    evidence         jsonb NOT NULL DEFAULT '[]'::jsonb,
    reason           text,
    amount           bigint,
    transfer_id      bigint,
    occurred_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    prev_hash        char(64) NOT NULL,
    hash             char(64) NOT NULL,
    CONSTRAINT audit_log_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT audit_log_household_seq UNIQUE (household_code, seq),
    CONSTRAINT audit_log_hash UNIQUE (hash)
);

CREATE FUNCTION audit_log_check_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE expected char(64);
BEGIN
    IF NEW.seq = 1 THEN
        expected := repeat('0', 64);
    ELSE
        SELECT hash INTO expected FROM audit_log WHERE household_code = NEW.household_code AND seq = NEW.seq - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'audit chain of % has no row % before row %', NEW.household_code, NEW.seq - 1, NEW.seq
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF NEW.prev_hash <> expected THEN
        RAISE EXCEPTION 'audit chain of % broken at row %: prev_hash does not match', NEW.household_code, NEW.seq
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_link BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_check_link();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Two-phase double-entry ledger, after TigerBeetle: accounts carry pending and posted totals per side.
CREATE TABLE ledger_accounts (
    id                              bigserial PRIMARY KEY,
    code                            text NOT NULL UNIQUE,
    name                            text NOT NULL,
    kind                            text NOT NULL CHECK (kind IN ('origin','source','household')),
    debits_must_not_exceed_credits  boolean NOT NULL DEFAULT false,
    credits_must_not_exceed_debits  boolean NOT NULL DEFAULT false,
    debits_pending                  bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted                   bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending                 bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted                  bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    created_at                      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_accounts_no_overdraw CHECK (
        NOT debits_must_not_exceed_credits OR debits_pending + debits_posted <= credits_posted),
    CONSTRAINT ledger_accounts_no_overcredit CHECK (
        NOT credits_must_not_exceed_debits OR credits_pending + credits_posted <= debits_posted)
);

CREATE TABLE funding_sources (
    code               text PRIMARY KEY CHECK (code ~ '^[A-Z0-9][A-Z0-9-]{{1,39}}$'),
    name               text NOT NULL,
    category           text NOT NULL,
    is_state_budget    boolean NOT NULL,
    account_id         bigint NOT NULL UNIQUE REFERENCES ledger_accounts(id),
    origin_account_id  bigint NOT NULL UNIQUE REFERENCES ledger_accounts(id),
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_transfers (
    id                 bigserial PRIMARY KEY,
    idempotency_key    text NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('posted','pending','post_pending','void_pending')),
    debit_account_id   bigint NOT NULL REFERENCES ledger_accounts(id),
    credit_account_id  bigint NOT NULL REFERENCES ledger_accounts(id),
    amount             bigint NOT NULL CHECK (amount > 0),
    pending_id         bigint REFERENCES ledger_transfers(id),
    household_code     text REFERENCES households(code),
    memo               text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_transfers_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT ledger_transfers_two_accounts CHECK (debit_account_id <> credit_account_id),
    CONSTRAINT ledger_transfers_resolution_names_pending CHECK (
        (kind IN ('post_pending','void_pending')) = (pending_id IS NOT NULL))
);
-- A pending transfer is posted or voided once, never both, never twice.
CREATE UNIQUE INDEX ledger_transfers_one_resolution ON ledger_transfers (pending_id) WHERE pending_id IS NOT NULL;
CREATE INDEX ledger_transfers_household ON ledger_transfers (household_code);

CREATE FUNCTION ledger_apply_transfer() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE p ledger_transfers%ROWTYPE;
DECLARE posted bigint;
BEGIN
    IF NEW.kind = 'posted' THEN
        UPDATE ledger_accounts SET debits_posted = debits_posted + NEW.amount WHERE id = NEW.debit_account_id;
        UPDATE ledger_accounts SET credits_posted = credits_posted + NEW.amount WHERE id = NEW.credit_account_id;
    ELSIF NEW.kind = 'pending' THEN
        UPDATE ledger_accounts SET debits_pending = debits_pending + NEW.amount WHERE id = NEW.debit_account_id;
        UPDATE ledger_accounts SET credits_pending = credits_pending + NEW.amount WHERE id = NEW.credit_account_id;
    ELSE
        SELECT * INTO p FROM ledger_transfers WHERE id = NEW.pending_id;
        IF NOT FOUND OR p.kind <> 'pending' THEN
            RAISE EXCEPTION 'transfer % is not a pending transfer', NEW.pending_id USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.debit_account_id <> p.debit_account_id OR NEW.credit_account_id <> p.credit_account_id THEN
            RAISE EXCEPTION 'resolution of pending transfer % must use its own accounts', p.id
                USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.kind = 'void_pending' AND NEW.amount <> p.amount THEN
            RAISE EXCEPTION 'void of pending transfer % must release its whole amount %', p.id, p.amount
                USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.kind = 'post_pending' AND NEW.amount > p.amount THEN
            RAISE EXCEPTION 'post of % exceeds pending transfer % of %', NEW.amount, p.id, p.amount
                USING ERRCODE = 'check_violation';
        END IF;
        posted := CASE WHEN NEW.kind = 'post_pending' THEN NEW.amount ELSE 0 END;
        UPDATE ledger_accounts
           SET debits_pending = debits_pending - p.amount, debits_posted = debits_posted + posted
         WHERE id = NEW.debit_account_id;
        UPDATE ledger_accounts
           SET credits_pending = credits_pending - p.amount, credits_posted = credits_posted + posted
         WHERE id = NEW.credit_account_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_transfers_apply AFTER INSERT ON ledger_transfers
    FOR EACH ROW EXECUTE FUNCTION ledger_apply_transfer();
CREATE TRIGGER ledger_transfers_append_only BEFORE UPDATE OR DELETE ON ledger_transfers
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER ledger_transfers_no_truncate BEFORE TRUNCATE ON ledger_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL,
    household_code   text REFERENCES households(code),
    kind             text NOT NULL,
    channel          text NOT NULL,
    recipient        text NOT NULL,
    subject          text NOT NULL,
    body             text NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','sent','dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    CONSTRAINT outbox_idempotency_key UNIQUE (idempotency_key)
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
"""

DOWNGRADE = """
DROP TABLE outbox;
DROP TABLE ledger_transfers;
DROP FUNCTION ledger_apply_transfer();
DROP TABLE funding_sources;
DROP TABLE ledger_accounts;
DROP TABLE audit_log;
DROP FUNCTION audit_log_check_link();
DROP FUNCTION refuse_change();
DROP TABLE households;
DROP TABLE import_batches;
DROP TABLE support_amounts;
DROP TABLE workflow_policies;
DROP TABLE users;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
