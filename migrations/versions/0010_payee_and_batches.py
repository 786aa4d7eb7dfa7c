"""What the application's login may still change after signed actions, closed where money depends on it.

- `households`: the application updates only the register columns a step writes (stage, sequence, money
  fields); the head of household (the payee), the CCCD, the place and the support type are written once, at
  import, so a process holding the application's login cannot redirect a payment.
- `workflow_policies`: who may act is policy data; a new version is inserted by the schema owner only
  (`policy apply` connects as the owner for that), so the application's login cannot publish a policy
  without segregation of duties.
- `payout_batch_runs`: each signed payout batch runs once. Its selecting activity records the assertion's
  one-time id with the run that took it; another run with the same signed input (a copied start) is refused.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

from migrations.privileges import grant, ident, separate_app_role
from migrations.sql import run_script

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

REGISTER_COLUMNS = "stage, last_seq, stage_since, entitlement, reserved, paid, funding_source, updated_at"

UPGRADE = """
CREATE TABLE payout_batch_runs (
    nonce        text PRIMARY KEY,
    batch_id     text NOT NULL,
    workflow_id  text NOT NULL,
    run_id       text NOT NULL,
    signed_by    text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER payout_batch_runs_append_only BEFORE UPDATE OR DELETE ON payout_batch_runs
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
"""


def upgrade() -> None:
    run_script(UPGRADE)
    grant({"payout_batch_runs": "SELECT, INSERT"})
    role = separate_app_role()
    if role is not None:
        op.execute(f"REVOKE UPDATE ON TABLE households FROM {ident(role)}")
        op.execute(f"GRANT UPDATE ({REGISTER_COLUMNS}) ON TABLE households TO {ident(role)}")
        op.execute(f"REVOKE INSERT ON TABLE workflow_policies FROM {ident(role)}")


def downgrade() -> None:
    role = separate_app_role()
    if role is not None:
        op.execute(f"GRANT INSERT ON TABLE workflow_policies TO {ident(role)}")
        op.execute(f"GRANT UPDATE ON TABLE households TO {ident(role)}")
    run_script("DROP TABLE payout_batch_runs;")
