"""The programme's deadlines as data: which houses each one covers (support types, beneficiary groups) and
by when they must be finished, with the document that set it. Dashboards measure progress against them.

Revision ID: 0005
Revises: 0004
"""

from migrations.sql import run_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE programme_deadlines (
    id                  serial PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    due_on              date NOT NULL,
    support_types       text[],  -- NULL: every support type
    beneficiary_groups  text[],  -- NULL: every group
    legal_basis         text NOT NULL,
    CHECK (support_types <@ ARRAY['new_build','repair']::text[]),
    CHECK (beneficiary_groups <@ ARRAY['meritorious','poor','near_poor','disaster','other']::text[])
);

INSERT INTO programme_deadlines (name, due_on, support_types, beneficiary_groups, legal_basis) VALUES
  ('Sửa chữa nhà hộ người có công, hộ nghèo, cận nghèo', '2025-04-30', ARRAY['repair'],
   ARRAY['meritorious','poor','near_poor'], 'Thông báo của UBND tỉnh Lạng Sơn ngày 25/02/2025'),
  ('Nhà ở cho người có công với cách mạng', '2025-07-27', NULL, ARRAY['meritorious'],
   'Chỉ đạo của Thủ tướng Chính phủ (hoàn thành trước 27/7/2025)'),
  ('Hoàn thành xóa nhà tạm, nhà dột nát', '2025-08-31', NULL, NULL,
   'Chỉ đạo của Thủ tướng Chính phủ (hạn toàn quốc 31/8/2025)');
"""

DOWNGRADE = "DROP TABLE programme_deadlines;"


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
