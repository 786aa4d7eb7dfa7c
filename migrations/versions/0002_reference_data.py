"""Reference data: support per house (Decision 21/2024/QĐ-TTg levels) and the first workflow policy.

Both are versioned rows: a later decision is a new row with a later effective date, never an edit.

Revision ID: 0002
Revises: 0001
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LEGAL_BASIS = (
    "QĐ 21/2024/QĐ-TTg (người có công); phát động xóa nhà tạm, nhà dột nát nâng mức hộ nghèo, cận nghèo lên cùng mức"
)

COMMUNE = "UBND cấp xã"
DISTRICT = "UBND cấp huyện"
FINANCE = "Sở Tài chính"

POLICY_2025_1 = {
    "version": "2025.1",
    "steps": {
        "verify": {"roles": ["commune_officer", "district_officer"], "responsible_agency": COMMUNE},
        "approve": {"roles": ["district_officer", "province_officer"], "responsible_agency": DISTRICT},
        "allocate": {"roles": ["finance_officer"], "responsible_agency": FINANCE},
        "complete_construction": {"roles": ["commune_officer"], "responsible_agency": COMMUNE},
        "accept": {"roles": ["commune_officer", "district_officer"], "responsible_agency": DISTRICT},
        "settle": {"roles": ["finance_officer"], "responsible_agency": FINANCE},
        "cancel": {
            "roles": ["district_officer", "province_officer"],
            "responsible_agency": DISTRICT,
            "evidence_required": False,
        },
    },
    "sla_days": {
        "verification": 30,
        "approval": 15,
        "fund_allocation": 15,
        "construction": 90,
        "acceptance": 15,
        "settlement": 15,
    },
    "distinct_actors": [["verify", "approve"], ["complete_construction", "accept"], ["allocate", "settle"]],
    "policy_admin_roles": ["admin"],
    "import_roles": ["province_officer", "district_officer", "admin"],
}


def upgrade() -> None:
    op.execute(
        sa.text(
            "INSERT INTO support_amounts (support_type, beneficiary_group, amount, effective_from, legal_basis) "
            "VALUES ('new_build', NULL, 60000000, DATE '2024-01-01', :basis), "
            "       ('repair',    NULL, 30000000, DATE '2024-01-01', :basis)"
        ).bindparams(basis=LEGAL_BASIS)
    )
    op.execute(
        sa.text(
            "INSERT INTO workflow_policies (version, effective_from, document) "
            "VALUES (:version, DATE '2024-10-25', CAST(:doc AS jsonb))"
        ).bindparams(version=POLICY_2025_1["version"], doc=json.dumps(POLICY_2025_1, ensure_ascii=False))
    )


def downgrade() -> None:
    op.execute("DELETE FROM workflow_policies WHERE version = '2025.1'")
    op.execute("DELETE FROM support_amounts WHERE effective_from = DATE '2024-01-01'")
