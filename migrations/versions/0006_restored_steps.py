"""Steps re-recorded after a database restore: which step, from which history (workflow and run), by whom,
when and why, and the audit hash the history holds next to the one written again. Append-only, like the
audit log it annotates.

Revision ID: 0006
Revises: 0005
"""

from migrations.sql import run_script

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE restored_steps (
    id                bigserial PRIMARY KEY,
    household_code    text NOT NULL REFERENCES households(code),
    seq               integer NOT NULL CHECK (seq >= 1),
    idempotency_key   text NOT NULL UNIQUE,
    step              text NOT NULL,
    audit_id          bigint NOT NULL UNIQUE REFERENCES audit_log(id),
    audit_hash        text NOT NULL,   -- the hash of the row written again
    history_hash      text NOT NULL,   -- the hash the engine was handed back the first time (in the history)
    workflow_id       text NOT NULL,
    run_id            text NOT NULL,
    history_event_id  bigint NOT NULL,
    transfer_ids      jsonb NOT NULL DEFAULT '{}'::jsonb,  -- history transfer id -> restored id, where they differ
    restored_by       text NOT NULL REFERENCES users(user_id),
    reason            text NOT NULL CHECK (length(btrim(reason)) > 0),
    restored_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT restored_steps_household_seq UNIQUE (household_code, seq)
);
CREATE TRIGGER restored_steps_append_only BEFORE UPDATE OR DELETE ON restored_steps
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER restored_steps_no_truncate BEFORE TRUNCATE ON restored_steps
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
"""

DOWNGRADE = "DROP TABLE restored_steps;"


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
