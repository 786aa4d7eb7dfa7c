"""Before the money: workflow policy 2026.2, and the register's changes a second person approved.

- Policy 2026.2 (in force from 1 December 2026): 2026.1 plus the eligibility criteria of Circular 01/2022/TT-BXD
  art. 3 (verification records its findings and is refused when none is met), a public posting of the reviewed
  list for `posting_days` before approval, objections recorded and resolved while it is posted, a double-support
  match overridden by the province, and change requests (support type, payee, withdrawal) made by the commune and
  decided by another person. Households in flight keep their version until a policy admin applies this one.
- `households.payee`: who payments go to when a change named someone other than the head of household (NULL:
  the head of household).
- `household_changes`: one row per change approved, naming the request's and the decision's audit rows and
  the two people (never the same). The application's login may update `support_type` and `payee` now, but a
  trigger lets them change only to what a change row written in the same transaction approved, and that row
  only when both audit rows are the household's, of the right steps, by the people it names.

Revision ID: 0016
Revises: 0015
"""

import json

import sqlalchemy as sa
from alembic import op

from migrations.privileges import grant, ident, separate_app_role
from migrations.sql import run_script

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

VERSION = "2026.2"
COMMUNE = "UBND cấp xã"
DISTRICT = "UBND cấp huyện"
PROVINCE = "UBND tỉnh"
NEW_STEPS = {
    "post_list": {"roles": ["commune_officer"], "responsible_agency": COMMUNE},
    "record_objection": {"roles": ["commune_officer", "district_officer"], "responsible_agency": COMMUNE},
    "resolve_objection": {
        "roles": ["commune_officer", "district_officer", "province_officer"],
        "responsible_agency": COMMUNE,
    },
    "override_double_support": {"roles": ["province_officer"], "responsible_agency": PROVINCE},
    "request_change": {"roles": ["commune_officer"], "responsible_agency": COMMUNE},
    "decide_change": {"roles": ["district_officer", "province_officer"], "responsible_agency": DISTRICT},
}
ELIGIBILITY = {
    "basis": "Thông tư 01/2022/TT-BXD, Điều 3",
    "min_non_durable_parts": 2,
    "area_per_person_below_m2": 8,
    "earlier_support_excludes": True,
}
POSTING_DAYS = 5

UPGRADE = """
ALTER TABLE households ADD COLUMN payee text CHECK (payee IS NULL OR length(btrim(payee)) >= 2);
CREATE TABLE household_changes (
    id                bigserial PRIMARY KEY,
    household_code    text NOT NULL REFERENCES households(code),
    kind              text NOT NULL CHECK (kind IN ('support_type', 'payee', 'withdraw')),
    old_value         text,
    new_value         text,
    request_audit_id  bigint NOT NULL REFERENCES audit_log(id),
    decision_audit_id bigint NOT NULL UNIQUE REFERENCES audit_log(id),
    requested_by      text NOT NULL REFERENCES users(user_id),
    approved_by       text NOT NULL REFERENCES users(user_id),
    at                timestamptz NOT NULL DEFAULT now(),
    CHECK (requested_by <> approved_by)
);
CREATE INDEX household_changes_household ON household_changes (household_code);
CREATE TRIGGER household_changes_append_only BEFORE UPDATE OR DELETE ON household_changes
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- A change row stands on the two signed steps it names: the commune's request and another person's decision.
CREATE FUNCTION household_changes_check() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.id = NEW.request_audit_id
                   AND a.household_code = NEW.household_code AND a.step = 'request_change'
                   AND a.actor_user_id = NEW.requested_by AND a.signed_input ->> 'kind' = NEW.kind)
       OR NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.id = NEW.decision_audit_id
                   AND a.household_code = NEW.household_code AND a.step = 'decide_change'
                   AND a.actor_user_id = NEW.approved_by
                   AND (a.signed_input ->> 'change')::int
                       = (SELECT r.seq FROM audit_log r WHERE r.id = NEW.request_audit_id)
                   AND coalesce((a.signed_input ->> 'approved')::boolean, true)) THEN
        RAISE EXCEPTION 'household %: a change stands on its request and its approval, recorded steps of two people',
            NEW.household_code USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER household_changes_check BEFORE INSERT ON household_changes
    FOR EACH ROW EXECUTE FUNCTION household_changes_check();

-- The support type decides the entitlement and the payee where the money goes: they change only as an approved
-- change written in this transaction says.
CREATE FUNCTION households_approved_change() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.support_type IS DISTINCT FROM OLD.support_type AND NOT EXISTS (
            SELECT 1 FROM household_changes c WHERE c.household_code = OLD.code AND c.kind = 'support_type'
            AND c.old_value = OLD.support_type AND c.new_value = NEW.support_type AND c.at = now()) THEN
        RAISE EXCEPTION 'household %: its support type changes only by an approved change request', OLD.code
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.payee IS DISTINCT FROM OLD.payee AND NOT EXISTS (
            SELECT 1 FROM household_changes c WHERE c.household_code = OLD.code AND c.kind = 'payee'
            AND c.new_value IS NOT DISTINCT FROM NEW.payee AND c.at = now()) THEN
        RAISE EXCEPTION 'household %: its payee changes only by an approved change request', OLD.code
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER households_approved_change BEFORE UPDATE OF support_type, payee ON households
    FOR EACH ROW EXECUTE FUNCTION households_approved_change();
"""

DOWNGRADE = """
DROP TRIGGER households_approved_change ON households;
DROP FUNCTION households_approved_change();
DROP TABLE household_changes;
DROP FUNCTION household_changes_check();
ALTER TABLE households DROP COLUMN payee;
"""

CHANGE_COLUMNS = "support_type, payee"


def upgrade() -> None:
    bind = op.get_bind()
    doc = dict(bind.execute(sa.text("SELECT document FROM workflow_policies WHERE version = '2026.1'")).scalar_one())
    doc["version"] = VERSION
    doc["steps"] = {**doc["steps"], **NEW_STEPS}
    doc["distinct_actors"] = [
        *doc.get("distinct_actors", []),
        ["verify", "resolve_objection"],
        ["request_change", "decide_change"],
    ]
    doc["eligibility"] = ELIGIBILITY
    doc["posting_days"] = POSTING_DAYS
    # And at the end of the file: acceptance records both minutes (Circular 55/2023/TT-BTC art. 75; the
    # settlement dossier lists them), and a grievance has 30 days (migration 0019's tables).
    doc["acceptance_minutes"] = True
    doc["grievance_days"] = 30
    bind.execute(
        sa.text(
            "INSERT INTO workflow_policies (version, effective_from, document) "
            "VALUES (:version, DATE '2026-12-01', CAST(:doc AS jsonb))"
        ).bindparams(version=VERSION, doc=json.dumps(doc, ensure_ascii=False))
    )
    run_script(UPGRADE)
    grant({"household_changes": "SELECT, INSERT"}, {"household_changes_id_seq": "USAGE"})
    role = separate_app_role()
    if role is not None:
        op.execute(f"GRANT UPDATE ({CHANGE_COLUMNS}) ON TABLE households TO {ident(role)}")


def downgrade() -> None:
    role = separate_app_role()
    if role is not None:
        op.execute(f"REVOKE UPDATE ({CHANGE_COLUMNS}) ON TABLE households FROM {ident(role)}")
    run_script(DOWNGRADE)
    op.execute(f"DELETE FROM workflow_policies WHERE version = '{VERSION}'")
