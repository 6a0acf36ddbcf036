"""`python -m jobqueue` and the `jobqueue` command: the CLI. Stop signals are caught before
anything else is imported (see jobqueue/signals.py); then the CLI runs."""

from jobqueue import signals


def main() -> None:
    signals.install_early()
    from jobqueue.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
