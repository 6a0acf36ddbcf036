"""Every CLI command and subcommand says what it does in its --help (no database needed)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from jobqueue.cli import COMMANDS, cli


def _commands():
    for name in COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        yield name, command
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                yield f"{name} {sub.name}", sub


def test_every_command_has_help_text():
    missing = [name for name, command in _commands()
               if not (command.help or command.short_help or "").strip()]
    assert missing == [], f"commands without help text: {missing}"


def test_help_runs_for_every_command():
    runner = CliRunner()
    for name, _ in _commands():
        result = runner.invoke(cli, [*name.split(), "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (name, result.output)
