"""Imports as signed acts: an import batch keeps the assertion over its file.

Registering a list is an act like a step: it puts households (and their CCCD) on the register, and the
importer is the person the policy may forbid to approve them. `import_batches.assertion` is the officers'
front door's Ed25519 assertion (core/signing.py) that the signed-in importer imported exactly this file (its
name and SHA-256), these many households: `operations.imports.import_digest` recomputes what it covers from
the row. A batch without one was written before this revision, or around the front doors.

The application's role already inserts into `import_batches` (0007): a table-wide grant covers the new column.

Revision ID: 0018
Revises: 0017
"""

from migrations.sql import run_script

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE import_batches ADD COLUMN assertion jsonb;
"""

DOWNGRADE = """
ALTER TABLE import_batches DROP COLUMN assertion;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
