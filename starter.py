"""Command line for operators and officers: `python starter.py --help`. The commands live in cli/, one
module per group (cli/app.py mounts them); this file only runs them."""

from cli.app import app, main

__all__ = ["app"]

if __name__ == "__main__":
    main()
