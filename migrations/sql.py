"""Run a multi-statement SQL script inside the migration's transaction.

asyncpg prepares every statement SQLAlchemy sends, and a prepared statement holds one command; plpgsql
bodies make splitting a script by ';' unsafe. So the script goes to the driver connection as one
simple-protocol query, on the same connection and in the same transaction.
"""

from alembic import op
from sqlalchemy.util import await_only


def run_script(sql: str) -> None:
    driver_connection = op.get_bind().connection.driver_connection
    await_only(driver_connection.execute(sql))
