"""Other programmes' beneficiary lists (keyed hashes of CCCD) and overrides of double-support matches.

A household another programme (CT-135, NQ-33, …) has already housed must not be paid again. The lists are
exchanged as keyed hashes of CCCD (HMAC-SHA256 under a key the programmes share, core/matching.py), never
as the numbers:

- `other_programme_lists`, `other_programme_beneficiaries`: each list imported (who, when, the file's
  SHA-256) and the hashes it names, one per (programme, hash). Loaded by the schema owner (`registry import`,
  like the gazetteer): a list decides who is held back, so the application's login, which any page or
  activity holds, may only read them. Never edited (append-only; a newer list of a programme adds to it).
- `household_match_keys`: the keyed hash of each registered household's CCCD, written by the application's
  login when the list is registered, so matching at approval is a join and the worker needs no key.
- `double_support_overrides`: an officer's decision that a match does not bar the household (the other
  programme's support was something else, or a namesake), with reason and evidence, tied to the audit row
  of the signed step that made it, one per (household, programme). The audit row must be the household's.

Revision ID: 0017
Revises: 0016
"""

from migrations.privileges import grant
from migrations.sql import run_script

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE other_programme_lists (
    id           bigserial PRIMARY KEY,
    programme    text NOT NULL CHECK (programme ~ '^[A-Z0-9][A-Z0-9./_-]{0,31}$'),
    name         text,
    file_name    text NOT NULL,
    file_sha256  char(64) NOT NULL CHECK (file_sha256 ~ '^[0-9a-f]{64}$'),
    row_count    integer NOT NULL CHECK (row_count >= 1),
    imported_by  text NOT NULL REFERENCES users(user_id),
    imported_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT other_programme_lists_once UNIQUE (programme, file_sha256),
    CONSTRAINT other_programme_lists_id_programme UNIQUE (id, programme)
);
CREATE TABLE other_programme_beneficiaries (
    list_id         bigint NOT NULL,
    programme       text NOT NULL,
    cccd_hmac       char(64) NOT NULL CHECK (cccd_hmac ~ '^[0-9a-f]{64}$'),
    supported_year  integer CHECK (supported_year BETWEEN 1945 AND 2100),
    note            text,
    PRIMARY KEY (programme, cccd_hmac),
    -- A beneficiary is of the programme whose list named it.
    FOREIGN KEY (list_id, programme) REFERENCES other_programme_lists (id, programme)
);
CREATE INDEX other_programme_beneficiaries_hmac ON other_programme_beneficiaries (cccd_hmac);
CREATE INDEX other_programme_beneficiaries_list ON other_programme_beneficiaries (list_id);

CREATE TABLE household_match_keys (
    household_code  text PRIMARY KEY REFERENCES households(code),
    cccd_hmac       char(64) NOT NULL CHECK (cccd_hmac ~ '^[0-9a-f]{64}$'),
    keyed_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX household_match_keys_hmac ON household_match_keys (cccd_hmac);

CREATE TABLE double_support_overrides (
    id              bigserial PRIMARY KEY,
    household_code  text NOT NULL REFERENCES households(code),
    programme       text NOT NULL,
    audit_id        bigint NOT NULL REFERENCES audit_log(id),
    by_user         text NOT NULL REFERENCES users(user_id),
    reason          text NOT NULL CHECK (btrim(reason) <> ''),
    evidence        text[] NOT NULL CHECK (cardinality(evidence) >= 1 AND array_position(evidence, '') IS NULL),
    at              timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT double_support_overrides_once UNIQUE (household_code, programme)
);

-- The application's login inserts overrides: the audit row it names must be the same household's step.
CREATE FUNCTION double_support_override_check() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.id = NEW.audit_id AND a.household_code = NEW.household_code) THEN
        RAISE EXCEPTION 'override of household %: audit row % is not a step of this household',
            NEW.household_code, NEW.audit_id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER double_support_overrides_check BEFORE INSERT ON double_support_overrides
    FOR EACH ROW EXECUTE FUNCTION double_support_override_check();

CREATE TRIGGER other_programme_lists_append_only BEFORE UPDATE OR DELETE ON other_programme_lists
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER other_programme_lists_no_truncate BEFORE TRUNCATE ON other_programme_lists
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER other_programme_beneficiaries_append_only BEFORE UPDATE OR DELETE ON other_programme_beneficiaries
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER other_programme_beneficiaries_no_truncate BEFORE TRUNCATE ON other_programme_beneficiaries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER household_match_keys_append_only BEFORE UPDATE OR DELETE ON household_match_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER household_match_keys_no_truncate BEFORE TRUNCATE ON household_match_keys
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER double_support_overrides_append_only BEFORE UPDATE OR DELETE ON double_support_overrides
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER double_support_overrides_no_truncate BEFORE TRUNCATE ON double_support_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
"""

DOWNGRADE = """
DROP TABLE double_support_overrides;
DROP FUNCTION double_support_override_check();
DROP TABLE household_match_keys;
DROP TABLE other_programme_beneficiaries;
DROP TABLE other_programme_lists;
"""


def upgrade() -> None:
    run_script(UPGRADE)
    # SELECT would come from 0007's default privileges; said here so the grants read whole. The lists are
    # the owner's to load: the application's login gets no INSERT on them.
    grant(
        {
            "other_programme_lists": "SELECT",
            "other_programme_beneficiaries": "SELECT",
            "household_match_keys": "SELECT, INSERT",
            "double_support_overrides": "SELECT, INSERT",
        },
        {"double_support_overrides_id_seq": "USAGE"},
    )


def downgrade() -> None:
    run_script(DOWNGRADE)
