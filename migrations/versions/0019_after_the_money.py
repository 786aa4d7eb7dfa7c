"""After the money: payment verification plans (who was asked whether the money arrived) and grievances.

- `verification_plans`: Finance's plan over paid households (a decision, a district, a commune, a period of
  payment), a full list or a sample sized by confidence and margin (operations/sampling.py), the seed it was
  drawn with and the sizes, so anyone can draw it again.
- `verification_households`: the households the plan asks, each with why (a risk, or `sampled`).
- `verification_answers`: one answer per household of a plan (received in full, with issues, not received;
  the amount; who asked, how). An answer is final: a wrong one is corrected by a grievance, not rewritten.
- `grievances` and `grievance_resolutions`: a complaint or report about a household (filed by an officer on a
  person's behalf, or opened by an answer), its category, what was said, evidence, who is responsible and its
  due date; its resolution is a row of its own, by someone other than the one it is about and the one who
  filed it. A grievance of a payment category that is not resolved blocks the household's settlement
  (activities/review_checks.py).

All append-only: the application's login inserts and reads.

Revision ID: 0019
Revises: 0018
"""

from migrations.privileges import grant
from migrations.sql import run_script

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE verification_plans (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL CHECK (btrim(name) <> ''),
    decision_ref  text,
    district      text,
    commune       text,
    paid_from     date,
    paid_to       date,
    full_list     boolean NOT NULL,
    -- As the draw used them (double precision: the numbers Python computed the size with, unrounded).
    confidence    double precision CHECK (confidence >= 0.8 AND confidence < 1),
    margin        double precision CHECK (margin >= 0.01 AND margin <= 0.2),
    design_factor double precision NOT NULL,
    population    integer NOT NULL CHECK (population >= 1),
    risk_count    integer NOT NULL CHECK (risk_count >= 0),
    sample_size   integer NOT NULL CHECK (sample_size >= 0),
    seed          bigint NOT NULL,
    created_by    text NOT NULL REFERENCES users(user_id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (full_list OR (confidence IS NOT NULL AND margin IS NOT NULL)),
    CHECK (paid_from IS NULL OR paid_to IS NULL OR paid_from <= paid_to)
);
-- The paid households the plan was drawn from, each with its risk (NULL: none), as they were at the draw:
-- with the seed they draw the same sample again (operations/receipts.redraw), whatever happened since.
CREATE TABLE verification_population (
    plan_id         bigint NOT NULL REFERENCES verification_plans(id),
    household_code  text NOT NULL REFERENCES households(code),
    risk            text,
    PRIMARY KEY (plan_id, household_code)
);
CREATE TABLE verification_households (
    plan_id         bigint NOT NULL REFERENCES verification_plans(id),
    household_code  text NOT NULL REFERENCES households(code),
    reason          text NOT NULL CHECK (btrim(reason) <> ''),
    PRIMARY KEY (plan_id, household_code)
);
CREATE TABLE verification_answers (
    plan_id         bigint NOT NULL,
    household_code  text NOT NULL,
    answer          text NOT NULL CHECK (answer IN ('received_full', 'received_issues', 'not_received')),
    amount          bigint CHECK (amount >= 0),
    asked_by        text NOT NULL REFERENCES users(user_id),
    channel         text NOT NULL CHECK (channel IN ('phone', 'visit', 'sms')),
    note            text,
    answered_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, household_code),
    -- Only a household the plan asks is answered.
    FOREIGN KEY (plan_id, household_code) REFERENCES verification_households (plan_id, household_code)
);

CREATE TABLE grievances (
    id                bigserial PRIMARY KEY,
    -- The caller's key: the same filing sent again is the same grievance (an answer's: plan:<id>:<code>).
    idempotency_key   text NOT NULL UNIQUE,
    household_code    text NOT NULL REFERENCES households(code),
    category          text NOT NULL CHECK (category IN ('payment_not_received', 'payment_issue', 'construction',
                                                        'eligibility', 'conduct', 'other')),
    said              text NOT NULL CHECK (btrim(said) <> ''),
    said_by           text,
    evidence          text[] NOT NULL DEFAULT '{}',
    responsible       text NOT NULL REFERENCES users(user_id),
    due_on            date NOT NULL,
    opened_by         text NOT NULL REFERENCES users(user_id),
    opened_at         timestamptz NOT NULL DEFAULT now(),
    plan_id           bigint,
    -- One grievance per answer that opened it (an answer recorded twice opens one).
    CONSTRAINT grievances_from_answer UNIQUE (plan_id, household_code),
    FOREIGN KEY (plan_id, household_code) REFERENCES verification_answers (plan_id, household_code)
);
CREATE INDEX grievances_household ON grievances (household_code);
CREATE TABLE grievance_resolutions (
    grievance_id  bigint PRIMARY KEY REFERENCES grievances(id),
    outcome       text NOT NULL CHECK (outcome IN ('resolved', 'unfounded', 'trace_payment')),
    resolution    text NOT NULL CHECK (btrim(resolution) <> ''),
    evidence      text[] NOT NULL DEFAULT '{}',
    resolved_by   text NOT NULL REFERENCES users(user_id),
    resolved_at   timestamptz NOT NULL DEFAULT now()
);

-- A grievance is resolved by someone other than the officer it is about and the one who filed it; a payment
-- grievance, by no one who released a payment of the household.
CREATE FUNCTION grievance_resolution_check() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public AS $$
DECLARE g grievances%ROWTYPE;
BEGIN
    SELECT * INTO g FROM grievances WHERE id = NEW.grievance_id;
    IF NEW.resolved_by IN (g.responsible, g.opened_by) OR (
        g.category IN ('payment_not_received', 'payment_issue')
        AND EXISTS (SELECT 1 FROM payments p WHERE p.household_code = g.household_code
                    AND p.released_by = NEW.resolved_by)
    ) THEN
        RAISE EXCEPTION 'grievance %: % may not resolve it (filed it, is its subject or released its payment)',
            NEW.grievance_id, NEW.resolved_by USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER grievance_resolutions_check BEFORE INSERT ON grievance_resolutions
    FOR EACH ROW EXECUTE FUNCTION grievance_resolution_check();
"""

TABLES = (
    "verification_plans",
    "verification_population",
    "verification_households",
    "verification_answers",
    "grievances",
    "grievance_resolutions",
)
UPGRADE += "".join(
    f"""
CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
"""
    for t in TABLES
)

DOWNGRADE = """
DROP TABLE grievance_resolutions;
DROP FUNCTION grievance_resolution_check();
DROP TABLE grievances;
DROP TABLE verification_answers;
DROP TABLE verification_households;
DROP TABLE verification_population;
DROP TABLE verification_plans;
"""


def upgrade() -> None:
    run_script(UPGRADE)
    grant(
        {t: "SELECT, INSERT" for t in TABLES},
        {"verification_plans_id_seq": "USAGE", "grievances_id_seq": "USAGE"},
    )


def downgrade() -> None:
    run_script(DOWNGRADE)
