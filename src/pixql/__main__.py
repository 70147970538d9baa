"""`python -m pixql` runs the CLI, as the `pixql` command does."""

from pixql.cli import main

if __name__ == "__main__":
    main()
