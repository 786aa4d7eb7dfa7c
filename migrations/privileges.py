"""What the application's role may do, granted by the migrations that run as the schema owner.

The role the worker and the web app log in as (DATABASE_URL's user) owns nothing: it cannot alter a table,
switch a trigger off, truncate or set `session_replication_role`. It holds per table only what the engine's
code does there. A migration that adds a table grants its writes here with `grant`; SELECT on new tables and
USAGE on new sequences come from the default privileges 0007 sets for the owner (`ALTER DEFAULT
PRIVILEGES`), so a new table is readable by the application and written only once a migration says so.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from alembic import context, op


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def app_role() -> str:
    """The application's role, as the caller of the migrations named it (runtime/migrate.py, migrations/env.py)."""
    return context.config.attributes["app_role"]


def separate_app_role() -> str | None:
    """The application's role when it is not the one running the migrations; None when one role does both
    (a database set up with DATABASE_URL alone, as before 0007: nothing to grant, the application is the
    owner). Refuses a role that does not exist: roles belong to the server, not to a migration."""
    role = app_role()
    bind = op.get_bind()
    if role == bind.scalar(sa.text("SELECT current_user")):
        return None
    if not bind.scalar(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}):
        raise RuntimeError(
            f"the application's role {role!r} (DATABASE_URL's user) does not exist on this server: create it "
            "(CREATE ROLE ... LOGIN PASSWORD ..., owning nothing) before migrating; the embedded stack and "
            "docker-compose's init script do"
        )
    return role


def grant(tables: Mapping[str, str], sequences: Mapping[str, str] = {}) -> None:  # noqa: B006 (read only)
    """GRANT `privileges` ON each table (and sequence) TO the application's role, if it is a separate role."""
    role = separate_app_role()
    if role is None:
        return
    for table, privileges in tables.items():
        op.execute(f"GRANT {privileges} ON TABLE {ident(table)} TO {ident(role)}")
    for sequence, privileges in sequences.items():
        op.execute(f"GRANT {privileges} ON SEQUENCE {ident(sequence)} TO {ident(role)}")
