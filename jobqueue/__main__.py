"""`python -m jobqueue`: the CLI."""

from jobqueue.cli import main

main()
