"""A payout batch's step on a household is taken only by the batch's own run.

Every household's step in a batch carries the batch's one signed assertion, so an update copied from one
household's history could be sent to another household of the same selection. The batch's run now writes a
ticket for each household it applies the step to (only when that household's tranche is ready for it, and
only from the run that claimed the batch in `payout_batch_runs`); the recording activity records a batch's
step only against its ticket.

Revision ID: 0012
Revises: 0011
"""

from migrations.privileges import grant
from migrations.sql import run_script

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE payout_batch_tickets (
    nonce           text NOT NULL REFERENCES payout_batch_runs(nonce),
    household_code  text NOT NULL REFERENCES households(code),
    tranche         integer NOT NULL CHECK (tranche >= 1),
    action          text NOT NULL CHECK (action IN ('authorise', 'release')),
    run_id          text NOT NULL,
    issued_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (nonce, household_code)
);
CREATE TRIGGER payout_batch_tickets_append_only BEFORE UPDATE OR DELETE ON payout_batch_tickets
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
"""


def upgrade() -> None:
    run_script(UPGRADE)
    grant({"payout_batch_tickets": "SELECT, INSERT"})


def downgrade() -> None:
    run_script("DROP TABLE payout_batch_tickets;")
