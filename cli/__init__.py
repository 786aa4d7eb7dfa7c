"""The command line: one Typer sub-app per group (cli/stack.py, cli/keys.py, cli/finance.py, …), mounted by
cli/app.py and run by starter.py; cli/command.py is what they share."""
