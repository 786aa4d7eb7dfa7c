"""PostgreSQL access: tables, and services that only flush; the caller owns the transaction."""
