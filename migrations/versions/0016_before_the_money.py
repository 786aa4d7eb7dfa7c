"""Before the money: policy 2026.2 (eligibility criteria, public posting, change requests) and the register's
controlled changes (support type, payee). Filled in by the change that needs it.

Revision ID: 0016
Revises: 0015
"""

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
