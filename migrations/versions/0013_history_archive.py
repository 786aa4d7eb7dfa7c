"""Histories that outlive Temporal's retention, and a witness of the audit chains outside the database.

`workflow_histories`: every closed household and payout-batch workflow's full history, written by the
engine's archive sweep (archive/sweep.py) while Temporal still holds it: the binary protobuf
(temporal.api.history.v1.History) with payloads sealed as stored, its SHA-256, which PostgreSQL checks
itself, and the witness's signature over both. Append-only: an archived history is never rewritten.

`witness_checkpoints`: signed checkpoints of the audit chains' heads and of the archive (archive/witness.py),
each linked to the one before. The key that signs them is not in the database: whoever rewrites the chains
here cannot sign a checkpoint that agrees, and the published copy outside the database shows a rollback.

Revision ID: 0013
Revises: 0012
"""

from migrations.privileges import grant
from migrations.sql import run_script

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE workflow_histories (
    seq             bigserial PRIMARY KEY,
    workflow_id     text NOT NULL,
    run_id          text NOT NULL,
    workflow_type   text NOT NULL,
    household_code  text,  -- from the workflow id; no foreign key: the archive keeps what Temporal held
    status          text NOT NULL,
    started_at      timestamptz NOT NULL,
    closed_at       timestamptz NOT NULL,
    events          integer NOT NULL CHECK (events >= 1),
    key_ids         text[] NOT NULL DEFAULT '{}',
    history         bytea NOT NULL,
    sha256          char(64) NOT NULL,
    -- The witness's Ed25519 signature over the row's particulars and hash (archive/store.py signed_bytes),
    -- made by the sweep with a ring the database never holds; '' when the worker runs without a witness.
    -- Readers holding the witness's public key take only rows it verifies, so a row planted with the
    -- application's login is not read, and cannot stand in for the run's real copy: a run may have
    -- several rows, one per signature (Ed25519 is deterministic: a retried copy writes nothing).
    key_id          text NOT NULL DEFAULT '',
    signature       text NOT NULL DEFAULT '',
    archived_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflow_histories_run UNIQUE (run_id, signature),
    CONSTRAINT workflow_histories_sha256 CHECK (sha256 = encode(sha256(history), 'hex'))
);
CREATE INDEX workflow_histories_workflow ON workflow_histories (workflow_id, closed_at DESC);
CREATE TRIGGER workflow_histories_append_only BEFORE UPDATE OR DELETE ON workflow_histories
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER workflow_histories_no_truncate BEFORE TRUNCATE ON workflow_histories
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

CREATE TABLE witness_checkpoints (
    seq             bigint PRIMARY KEY CHECK (seq >= 1),
    made_at         timestamptz NOT NULL,
    body            jsonb NOT NULL,
    prev_hash       char(64) NOT NULL,
    hash            char(64) NOT NULL UNIQUE,
    key_id          text NOT NULL,
    signature       text NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER witness_checkpoints_append_only BEFORE UPDATE OR DELETE ON witness_checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER witness_checkpoints_no_truncate BEFORE TRUNCATE ON witness_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
"""


# The application may insert a history but not choose its place in the archive's order or its time: `seq`
# and `archived_at` are the database's (a row slipped into an order a checkpoint already covers is refused).
ARCHIVE_COLUMNS = (
    "workflow_id, run_id, workflow_type, household_code, status, started_at, closed_at, events, "
    "key_ids, history, sha256, key_id, signature"
)
CHECKPOINT_COLUMNS = "seq, made_at, body, prev_hash, hash, key_id, signature"


def upgrade() -> None:
    run_script(UPGRADE)
    grant(
        {
            "workflow_histories": f"SELECT, INSERT ({ARCHIVE_COLUMNS})",
            "witness_checkpoints": f"SELECT, INSERT ({CHECKPOINT_COLUMNS})",
        }
    )


def downgrade() -> None:
    # The archive may hold the only copy of histories Temporal has deleted: a downgrade does not drop it.
    run_script("""
    DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM workflow_histories) THEN
            RAISE EXCEPTION 'workflow_histories holds archived histories: export them (audit export) and '
                            'drop the table by hand if they are really to go';
        END IF;
    END $$;
    DROP TABLE witness_checkpoints; DROP TABLE workflow_histories;
    """)
