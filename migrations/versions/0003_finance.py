"""Finance: source rules and allocation policies, tranche plans, payouts and payments, decisions,
reimbursement (cấp bù) and VBSP loans; the 2025.2 workflow policy with the payout steps.

As in 0001, the rules that must hold whatever writes here are PostgreSQL's: one row per (household,
tranche), one payment per end-to-end id, one confirmed payment per tranche, loan events append-only,
transfer codes from a fixed list.

Revision ID: 0003
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

from migrations.sql import run_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CATEGORIES = "('national_target_programme','provincial_budget','storm_relief','donation','district_advance')"
TRANCHE_STATUSES = "('planned','due','authorised','released','paid','voided')"

UPGRADE = f"""
ALTER TABLE households ADD COLUMN programme text CHECK (programme ~ '^[A-Z0-9][A-Z0-9-]{{1,39}}$');

ALTER TABLE funding_sources
    ADD COLUMN rules jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    ADD COLUMN priority integer NOT NULL DEFAULT 100,
    ADD CONSTRAINT funding_sources_category CHECK (category IN {CATEGORIES});

-- What a transfer is for (TigerBeetle's `code`) and the tranche it belongs to. Earlier rows keep NULL.
ALTER TABLE ledger_transfers
    ADD COLUMN code text CHECK (code IN ('receipt','allocation','payout','release','reimbursement')),
    ADD COLUMN tranche smallint CHECK (tranche >= 1);
CREATE INDEX ledger_transfers_household_tranche ON ledger_transfers (household_code, tranche);

-- The order in which sources cover a household, per national target programme ('default' for others).
CREATE TABLE allocation_policies (
    programme       text NOT NULL,
    version         text NOT NULL,
    effective_from  date NOT NULL,
    document        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (programme, version),
    CONSTRAINT allocation_policies_one_per_day UNIQUE (programme, effective_from)
);

-- How a household's support is paid: tranches per support type and group, versioned by date.
CREATE TABLE tranche_plans (
    id                 serial PRIMARY KEY,
    support_type       text NOT NULL CHECK (support_type IN ('new_build','repair')),
    beneficiary_group  text,  -- NULL: every group
    effective_from     date NOT NULL,
    document           jsonb NOT NULL,
    legal_basis        text NOT NULL,
    CONSTRAINT tranche_plans_one_version UNIQUE NULLS NOT DISTINCT (support_type, beneficiary_group, effective_from)
);

-- Read model of each household's tranches (the workflow is the source of truth; this is for queries).
CREATE TABLE household_tranches (
    household_code  text NOT NULL REFERENCES households(code),
    tranche         smallint NOT NULL CHECK (tranche >= 1),
    percent         smallint NOT NULL CHECK (percent > 0 AND percent <= 100),
    milestone       text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    status          text NOT NULL CHECK (status IN {TRANCHE_STATUSES}),
    authorised_by   text REFERENCES users(user_id),
    released_by     text REFERENCES users(user_id),
    attempts        integer NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (household_code, tranche),
    -- Separation of duties, also here: the person who authorised a payout never releases it.
    CONSTRAINT household_tranches_two_people CHECK (authorised_by IS NULL OR released_by IS NULL
                                                    OR authorised_by <> released_by)
);
CREATE INDEX household_tranches_status ON household_tranches (tranche, status);

-- Payment instructions sent to the bank / treasury channel, one row per end-to-end id.
CREATE TABLE payments (
    payment_id      text PRIMARY KEY,
    household_code  text NOT NULL REFERENCES households(code),
    tranche         smallint NOT NULL,
    attempt         integer NOT NULL CHECK (attempt >= 1),
    amount          bigint NOT NULL CHECK (amount > 0),
    payee           text NOT NULL,
    channel         text NOT NULL,
    status          text NOT NULL CHECK (status IN ('sent','confirmed','failed')),
    overdue         boolean NOT NULL DEFAULT false,
    bank_ref        text,
    reason          text,
    released_by     text NOT NULL REFERENCES users(user_id),
    sent_at         timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    CONSTRAINT payments_attempt UNIQUE (household_code, tranche, attempt)
);
-- A tranche is paid once: never two confirmed payments for it.
CREATE UNIQUE INDEX payments_one_confirmed ON payments (household_code, tranche) WHERE status = 'confirmed';

-- Approving decisions: the first list and the supplementary ones that amend it.
CREATE TABLE decisions (
    ref            text PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('original','supplementary')),
    supplements    text REFERENCES decisions(ref),
    decided_on     date,
    note           text,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT decisions_supplement_names_original CHECK ((kind = 'supplementary') = (supplements IS NOT NULL))
);
INSERT INTO decisions (ref, kind) SELECT DISTINCT decision_ref, 'original' FROM households;
ALTER TABLE households ADD CONSTRAINT households_decision FOREIGN KEY (decision_ref) REFERENCES decisions(ref);

-- VBSP preferential loans: co-financing to the household, never grant money, so never in the ledger.
CREATE TABLE household_loans (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    household_code   text NOT NULL REFERENCES households(code),
    lender           text NOT NULL DEFAULT 'VBSP',
    amount           bigint NOT NULL CHECK (amount > 0),
    status           text NOT NULL CHECK (status IN ('approved','disbursed','repaying','repaid','cancelled')),
    recorded_by      text NOT NULL REFERENCES users(user_id),
    note             text,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX household_loans_household ON household_loans (household_code, id);
CREATE TRIGGER household_loans_append_only BEFORE UPDATE OR DELETE ON household_loans
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
"""

DOWNGRADE = """
DROP TABLE household_loans;
ALTER TABLE households DROP CONSTRAINT households_decision;
DROP TABLE decisions;
DROP TABLE payments;
DROP TABLE household_tranches;
DROP TABLE tranche_plans;
DROP TABLE allocation_policies;
DROP INDEX ledger_transfers_household_tranche;
ALTER TABLE ledger_transfers DROP COLUMN code, DROP COLUMN tranche;
ALTER TABLE funding_sources DROP CONSTRAINT funding_sources_category, DROP COLUMN rules, DROP COLUMN priority;
ALTER TABLE households DROP COLUMN programme;
DELETE FROM workflow_policies WHERE version = '2025.2';
"""

TRANCHE_BASIS = "Thông tư 55/2023/TT-BTC điều 75 (chương trình MTQG giảm nghèo bền vững)"
TRANCHE_PLANS = {
    "new_build": [{"percent": 70, "milestone": "foundation"}, {"percent": 30, "milestone": "acceptance"}],
    "repair": [{"percent": 70, "milestone": "progress_30"}, {"percent": 30, "milestone": "acceptance"}],
}

# National target programme households: their programme's budget first (and a district's advance for
# them, reimbursed later); then the province's pool; donations fill what is left.
ALLOCATION_PROGRAMME = {
    "version": "2025.1",
    "programme": "default",
    "tiers": [
        {
            "name": "Ngân sách chương trình MTQG của hộ",
            "categories": ["national_target_programme", "district_advance"],
            "programme_households_only": True,
            "max_per_house": {"new_build": 40000000, "repair": 20000000},
        },
        {"name": "Nguồn chung của tỉnh", "categories": ["provincial_budget", "storm_relief"]},
        {"name": "Vận động, ủng hộ (bù phần thiếu)", "categories": ["donation"]},
    ],
}

PAYOUT_STEPS = {
    "report_progress": {"roles": ["commune_officer"], "responsible_agency": "UBND cấp xã"},
    "authorise_payout": {"roles": ["finance_officer"], "responsible_agency": "Sở Tài chính"},
    "release_payout": {
        "roles": ["commune_officer", "treasury_officer"],
        "responsible_agency": "Kho bạc Nhà nước / UBND cấp xã",
    },
}


def upgrade() -> None:
    run_script(UPGRADE)
    bind = op.get_bind()
    for support_type, tranches in TRANCHE_PLANS.items():
        bind.execute(
            sa.text(
                "INSERT INTO tranche_plans (support_type, beneficiary_group, effective_from, document, legal_basis) "
                "VALUES (:t, NULL, DATE '2024-01-01', CAST(:doc AS jsonb), :basis)"
            ).bindparams(t=support_type, doc=json.dumps(tranches), basis=TRANCHE_BASIS)
        )
    bind.execute(
        sa.text(
            "INSERT INTO allocation_policies (programme, version, effective_from, document) "
            "VALUES ('default', '2025.1', DATE '2024-10-25', CAST(:doc AS jsonb))"
        ).bindparams(doc=json.dumps(ALLOCATION_PROGRAMME, ensure_ascii=False))
    )
    # Workflow policy 2025.2 = 2025.1 plus who takes the payout steps, and authorise ≠ release.
    doc = bind.execute(sa.text("SELECT document FROM workflow_policies WHERE version = '2025.1'")).scalar_one()
    doc = dict(doc)
    doc["version"] = "2025.2"
    doc["steps"] = {**doc["steps"], **PAYOUT_STEPS}
    doc["distinct_actors"] = [*doc["distinct_actors"], ["authorise_payout", "release_payout"]]
    doc["payment_confirm_hours"] = 72
    doc["payment_max_attempts"] = 2
    bind.execute(
        sa.text(
            "INSERT INTO workflow_policies (version, effective_from, document) "
            "VALUES ('2025.2', DATE '2025-02-25', CAST(:doc AS jsonb))"
        ).bindparams(doc=json.dumps(doc, ensure_ascii=False))
    )


def downgrade() -> None:
    run_script(DOWNGRADE)
