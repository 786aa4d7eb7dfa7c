"""The command line: one Typer sub-app per group, mounted by starter.py."""
