"""Workflow policy 2026.1: segregation of duties that signed actions make enforceable.

2025.2 plus: the commune officer who reports a tranche's milestone may not also release that tranche
(`distinct_per_tranche`), and whoever imported a household's list may not approve it (`importer_may_not`).
Policies are data: a new version with a later effective date, never an edit of the old one; households in
flight keep theirs until a policy admin applies this one (`policy apply`).

Revision ID: 0009
Revises: 0008
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

VERSION = "2026.1"


def upgrade() -> None:
    bind = op.get_bind()
    doc = dict(bind.execute(sa.text("SELECT document FROM workflow_policies WHERE version = '2025.2'")).scalar_one())
    doc["version"] = VERSION
    doc["distinct_per_tranche"] = [["report_progress", "release_payout"]]
    doc["importer_may_not"] = ["approve"]
    bind.execute(
        sa.text(
            "INSERT INTO workflow_policies (version, effective_from, document) "
            "VALUES (:version, DATE '2026-01-01', CAST(:doc AS jsonb))"
        ).bindparams(version=VERSION, doc=json.dumps(doc, ensure_ascii=False))
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM workflow_policies WHERE version = '{VERSION}'")
