"""Each account change is signed by the front door that authenticated the administrator.

The hash chain of `account_changes` (0008) has no secret in it: a process holding the application's login
could append a row in an administrator's name that chains as well as a real one. From here each row also
carries `assertion`, the officers' front door's Ed25519 assertion over the row's content (its link to the row
before included), which only a holder of the private key can make; `users trail --verify` checks every row's
signature against `signing_keys`, and a sign-in accepts a password or token only when the latest signed
change of that credential names exactly the stored hash.

The index serves that sign-in check (the latest changes of one user).

`web_sessions.assertion` closes the same door for sessions: the web app signs each session it opens (after
the password check) for its user, token hash and lifetime; a session row without the front door's signature,
inserted with the application's login, signs nobody in.

Revision ID: 0011
Revises: 0010
"""

from migrations.sql import run_script

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE account_changes ADD COLUMN assertion jsonb;
CREATE INDEX account_changes_by_user_id ON account_changes (user_id, id);
ALTER TABLE web_sessions ADD COLUMN assertion jsonb;
"""

DOWNGRADE = """
ALTER TABLE web_sessions DROP COLUMN assertion;
DROP INDEX account_changes_by_user_id;
ALTER TABLE account_changes DROP COLUMN assertion;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
