"""Each household's audit chain head, kept where deleting audit rows cannot take it away.

The chain check alone cannot see a cut tail (the last rows of a household deleted) or a household whose
every row was deleted: what is left still numbers from 1 and links. So every audit row, as it is inserted,
also moves its household's head in `audit_chain_heads` (seq and hash of the newest row) by a trigger that
runs as the owner: the application's login may read the heads but neither write nor delete them, and a head
never moves back. `audit chain` compares each chain's last row with its head. (Someone with the owner's
login can edit both; the witness's signed checkpoints, outside the database, name that.)

Revision ID: 0014
Revises: 0013
"""

from migrations.sql import run_script

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE audit_chain_heads (
    household_code  text PRIMARY KEY,
    seq             integer NOT NULL CHECK (seq >= 1),
    hash            char(64) NOT NULL,
    moved_at        timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION audit_chain_head_moves() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO audit_chain_heads (household_code, seq, hash) VALUES (NEW.household_code, NEW.seq, NEW.hash)
    ON CONFLICT (household_code) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, moved_at = now()
        WHERE audit_chain_heads.seq < EXCLUDED.seq;  -- an older row put back (by the owner) moves nothing
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_head AFTER INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_chain_head_moves();

CREATE FUNCTION audit_chain_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.household_code <> OLD.household_code OR NEW.seq <> OLD.seq + 1 THEN
        RAISE EXCEPTION 'the audit chain head of % moves one row forward at a time (from % to %)',
            OLD.household_code, OLD.seq, NEW.seq USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_chain_heads_forward BEFORE UPDATE ON audit_chain_heads
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_forward();
CREATE TRIGGER audit_chain_heads_no_delete BEFORE DELETE ON audit_chain_heads
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER audit_chain_heads_no_truncate BEFORE TRUNCATE ON audit_chain_heads
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- The heads of the chains written before this migration.
INSERT INTO audit_chain_heads (household_code, seq, hash)
SELECT DISTINCT ON (household_code) household_code, seq, hash FROM audit_log ORDER BY household_code, seq DESC;
"""


def upgrade() -> None:
    # The application reads the heads through 0007's default privileges; only the trigger, as the owner,
    # writes them.
    run_script(UPGRADE)


def downgrade() -> None:
    run_script("""
    DROP TRIGGER audit_log_head ON audit_log;
    DROP TABLE audit_chain_heads;
    DROP FUNCTION audit_chain_head_moves();
    DROP FUNCTION audit_chain_head_forward();
    """)
