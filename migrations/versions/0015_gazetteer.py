"""The dated gazetteer and the 2025 reform: administrative units with their validity, reorganisations and their
successions, households that move to a new unit, and the handover of district-held money.

- `gazetteers`, `admin_units`, `reorganisations`, `successions`: loaded by the schema owner from a file
  (`starter.py reform load`), whole or not at all, never edited (append-only; a new version adds to them). The
  application's login reads them: the recording activity checks a household's move and an actor's unit
  against them.
- `households`: `district` may be empty (after 1 July 2025 there are no districts); `old_district` and
  `old_commune` keep the units a household was imported under (set by a trigger, never changed), so reports
  can be read under the old map; `moved_under` names the reorganisation that moved it, once.
- `users`: a commune officer of a new commune has no district.
- `handovers`: the biên bản bàn giao of each district-held funding source, with the ledger transfer that hands
  its free money to the successor (transfer code `handover`).

Revision ID: 0015
Revises: 0014
"""

from alembic import op

from migrations.privileges import grant, ident, separate_app_role
from migrations.sql import run_script

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE gazetteers (
    version     text PRIMARY KEY,
    province    text NOT NULL,
    source      text NOT NULL,
    sha256      char(64) NOT NULL,
    document    jsonb NOT NULL,
    loaded_by   text NOT NULL REFERENCES users(user_id),
    loaded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE admin_units (
    code         text PRIMARY KEY,
    name         text NOT NULL,
    level        text NOT NULL CHECK (level IN ('province','district','commune','ward','town')),
    parent       text REFERENCES admin_units(code),
    valid_from   date,
    valid_until  date,
    generated    boolean NOT NULL DEFAULT false,
    gazetteer    text NOT NULL REFERENCES gazetteers(version),
    CONSTRAINT admin_units_dates CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)
);
CREATE INDEX admin_units_name ON admin_units (name);
CREATE TABLE reorganisations (
    basis       text PRIMARY KEY,
    title       text NOT NULL,
    effective   date NOT NULL,
    gazetteer   text NOT NULL REFERENCES gazetteers(version)
);
CREATE TABLE successions (
    basis       text NOT NULL REFERENCES reorganisations(basis),
    from_unit   text NOT NULL REFERENCES admin_units(code),
    to_unit     text NOT NULL REFERENCES admin_units(code),
    households  text[] NOT NULL DEFAULT '{}',
    generated   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (basis, from_unit, to_unit)
);
CREATE TRIGGER gazetteers_append_only BEFORE UPDATE OR DELETE ON gazetteers
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER admin_units_append_only BEFORE UPDATE OR DELETE ON admin_units
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER reorganisations_append_only BEFORE UPDATE OR DELETE ON reorganisations
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER successions_append_only BEFORE UPDATE OR DELETE ON successions
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

ALTER TABLE households ALTER COLUMN district DROP NOT NULL;
ALTER TABLE households ADD COLUMN old_district text, ADD COLUMN old_commune text,
    ADD COLUMN moved_under text REFERENCES reorganisations(basis), ADD COLUMN moved_at timestamptz;
UPDATE households SET old_district = district, old_commune = commune;
ALTER TABLE households ALTER COLUMN old_commune SET NOT NULL;
-- Where a household was imported stays as it was: the old map's reports read it. Its units change once, by a
-- move the gazetteer makes: from the unit a succession of the named reorganisation ends, to that succession's
-- unit (the application's login may update these columns, so PostgreSQL holds the rule, not only Python).
CREATE FUNCTION households_keep_origin() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.old_district := NEW.district;
        NEW.old_commune := NEW.commune;
        RETURN NEW;
    END IF;
    IF NEW.old_district IS DISTINCT FROM OLD.old_district OR NEW.old_commune IS DISTINCT FROM OLD.old_commune THEN
        RAISE EXCEPTION 'household %: where it was imported is never changed',
            OLD.code USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.province, NEW.district, NEW.commune, NEW.moved_under)
       IS DISTINCT FROM (OLD.province, OLD.district, OLD.commune, OLD.moved_under) THEN
        -- Units and the reorganisation that moved them change together, to what one succession of a new
        -- reorganisation names for this household (a split unit: the successor whose list names it, else the one
        -- without a list), with the time of the move.
        IF NEW.moved_under IS NULL OR NEW.moved_under IS NOT DISTINCT FROM OLD.moved_under OR NEW.moved_at IS NULL
           OR NEW.province IS DISTINCT FROM OLD.province
           OR NOT EXISTS (
                SELECT 1 FROM successions s
                JOIN admin_units f ON f.code = s.from_unit
                LEFT JOIN admin_units fp ON fp.code = f.parent
                JOIN admin_units t ON t.code = s.to_unit
                LEFT JOIN admin_units tp ON tp.code = t.parent
                WHERE s.basis = NEW.moved_under AND f.name = OLD.commune
                  AND (fp.level = 'district' AND fp.name = OLD.district
                       OR fp.level = 'province' AND OLD.district IS NULL)
                  AND t.name = NEW.commune
                  AND NEW.district IS NOT DISTINCT FROM (CASE WHEN tp.level = 'district' THEN tp.name END)
                  AND (OLD.code = ANY (s.households) OR (cardinality(s.households) = 0 AND NOT EXISTS (
                        SELECT 1 FROM successions o
                        WHERE o.basis = s.basis AND o.from_unit = s.from_unit AND OLD.code = ANY (o.households))))) THEN
            RAISE EXCEPTION 'household %: its units change only by a move a reorganisation''s succession makes, once',
                OLD.code USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER households_keep_origin BEFORE INSERT OR UPDATE ON households
    FOR EACH ROW EXECUTE FUNCTION households_keep_origin();

ALTER TABLE users DROP CONSTRAINT users_commune_needs_district;

ALTER TABLE ledger_transfers DROP CONSTRAINT ledger_transfers_code_check;
ALTER TABLE ledger_transfers ADD CONSTRAINT ledger_transfers_code_check
    CHECK (code IN ('receipt','allocation','payout','release','reimbursement','handover'));

CREATE TABLE handovers (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    basis            text NOT NULL REFERENCES reorganisations(basis),
    source           text NOT NULL REFERENCES funding_sources(code),
    from_unit        text NOT NULL REFERENCES admin_units(code),
    to_unit          text NOT NULL REFERENCES admin_units(code),
    to_source        text NOT NULL REFERENCES funding_sources(code),
    received         bigint NOT NULL,
    reserved         bigint NOT NULL,
    paid             bigint NOT NULL,
    reimbursed   bigint NOT NULL,
    handed_over      bigint NOT NULL CHECK (handed_over >= 0),
    receivable       bigint NOT NULL,
    transfer_id      bigint REFERENCES ledger_transfers(id),
    findings         jsonb NOT NULL DEFAULT '[]',
    recorded_by      text NOT NULL REFERENCES users(user_id),
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT handovers_once UNIQUE (basis, source)
);
CREATE TRIGGER handovers_append_only BEFORE UPDATE OR DELETE ON handovers
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
"""

DOWNGRADE = """
DROP TABLE handovers;
ALTER TABLE ledger_transfers DROP CONSTRAINT ledger_transfers_code_check;
ALTER TABLE ledger_transfers ADD CONSTRAINT ledger_transfers_code_check
    CHECK (code IN ('receipt','allocation','payout','release','reimbursement'));
ALTER TABLE users ADD CONSTRAINT users_commune_needs_district CHECK (commune IS NULL OR district IS NOT NULL);
DROP TRIGGER households_keep_origin ON households;
DROP FUNCTION households_keep_origin();
ALTER TABLE households DROP COLUMN moved_at, DROP COLUMN moved_under, DROP COLUMN old_commune, DROP COLUMN old_district;
ALTER TABLE households ALTER COLUMN district SET NOT NULL;
DROP TABLE successions;
DROP TABLE reorganisations;
DROP TABLE admin_units;
DROP TABLE gazetteers;
"""


# A move writes where the household now is, and which reorganisation moved it (the trigger checks both).
MOVE_COLUMNS = "district, commune, moved_under, moved_at"


def upgrade() -> None:
    run_script(UPGRADE)
    grant({"handovers": "SELECT, INSERT"}, {"handovers_id_seq": "USAGE"})
    role = separate_app_role()
    if role is not None:
        op.execute(f"GRANT UPDATE ({MOVE_COLUMNS}) ON TABLE households TO {ident(role)}")


def downgrade() -> None:
    role = separate_app_role()
    if role is not None:
        op.execute(f"REVOKE UPDATE ({MOVE_COLUMNS}) ON TABLE households FROM {ident(role)}")
    run_script(DOWNGRADE)
