"""Web access: passwords, server-side sessions, API tokens and the login attempts that throttle guessing.

Secrets are never stored: a password as its argon2 hash, a session or API token as its SHA-256 (the
token itself is only ever in the user's hands). A user's role, agency and jurisdiction stay in `users`;
these tables only say who may sign in as that user.

Revision ID: 0004
Revises: 0003
"""

from migrations.sql import run_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE user_credentials (
    user_id        text PRIMARY KEY REFERENCES users (user_id),
    password_hash  text NOT NULL CHECK (password_hash LIKE '$argon2%'),
    changed_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE web_sessions (
    token_hash  text PRIMARY KEY CHECK (length(token_hash) = 64),
    user_id     text NOT NULL REFERENCES users (user_id),
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

CREATE TABLE api_tokens (
    id            serial PRIMARY KEY,
    user_id       text NOT NULL REFERENCES users (user_id),
    name          text NOT NULL,
    token_hash    text NOT NULL UNIQUE CHECK (length(token_hash) = 64),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    CONSTRAINT api_tokens_one_name UNIQUE (user_id, name)
);

CREATE TABLE login_attempts (
    id          bigserial PRIMARY KEY,
    user_id     text NOT NULL,  -- as typed: attempts on names that do not exist are throttled too
    client      text NOT NULL,
    ok          boolean NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempts_recent ON login_attempts (user_id, at);
"""

DOWNGRADE = """
DROP TABLE login_attempts;
DROP TABLE api_tokens;
DROP TABLE web_sessions;
DROP TABLE user_credentials;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
