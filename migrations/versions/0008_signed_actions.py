"""Signed actions: the public keys that verify them, the assertion kept with each step, and a tamper-evident
trail of account administration.

- `signing_keys`: the public half of every key a front door signs with (holder `officers`: the web app and
  the command line; `channel`: the payment channel's answers), with the period it was valid in. Written by
  the owner role only (`stack up`, `keys signing-rotate`): the application's role may read, so a process
  holding only the application's login cannot make a key the engine trusts.
- `audit_log.assertion` / `signed_input`: the step's signed assertion and the input it covers. One
  assertion is taken once per household (a unique index): a copied assertion cannot record a step twice.
- `account_changes`: who added a user, reset a password, issued or revoked a token, disabled or enabled an
  account; one hash chain, append-only, each row linked to the one before (checked on insert).

Revision ID: 0008
Revises: 0007
"""

from migrations.privileges import grant
from migrations.sql import run_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE signing_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    holder       text NOT NULL CHECK (holder IN ('officers', 'channel')),
    public_key   text NOT NULL UNIQUE,
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz,
    added_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);

ALTER TABLE audit_log ADD COLUMN assertion jsonb, ADD COLUMN signed_input jsonb;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_assertion_with_input
    CHECK ((assertion IS NULL) = (signed_input IS NULL));
CREATE UNIQUE INDEX audit_log_assertion_once ON audit_log (household_code, (assertion->>'nonce'))
    WHERE assertion IS NOT NULL;

CREATE TABLE account_changes (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    by_user     text NOT NULL,
    action      text NOT NULL CHECK (action IN ('add', 'reset', 'disable', 'enable', 'token', 'revoke',
                                                'bootstrap')),
    user_id     text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash   char(64) NOT NULL,
    hash        char(64) NOT NULL UNIQUE
);
CREATE FUNCTION account_changes_check_link() RETURNS trigger LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
DECLARE
    expected char(64);
BEGIN
    -- One writer at a time, so two changes cannot both link to the same row.
    PERFORM pg_advisory_xact_lock(hashtext('account_changes'));
    SELECT hash INTO expected FROM public.account_changes ORDER BY id DESC LIMIT 1;
    IF NEW.prev_hash <> coalesce(expected, repeat('0', 64)) THEN
        RAISE EXCEPTION 'account_changes chain broken: prev_hash does not match the last row';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER account_changes_link BEFORE INSERT ON account_changes
    FOR EACH ROW EXECUTE FUNCTION account_changes_check_link();
CREATE TRIGGER account_changes_append_only BEFORE UPDATE OR DELETE ON account_changes
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER account_changes_no_truncate BEFORE TRUNCATE ON account_changes
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
"""

DOWNGRADE = """
DROP TABLE account_changes;
DROP FUNCTION account_changes_check_link();
DROP INDEX audit_log_assertion_once;
ALTER TABLE audit_log DROP CONSTRAINT audit_log_assertion_with_input;
ALTER TABLE audit_log DROP COLUMN assertion, DROP COLUMN signed_input;
DROP TABLE signing_keys;
"""


def upgrade() -> None:
    run_script(UPGRADE)
    grant({"account_changes": "SELECT, INSERT"}, {"account_changes_id_seq": "USAGE"})


def downgrade() -> None:
    run_script(DOWNGRADE)
