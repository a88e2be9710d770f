"""The "Scaling out" page's configuration is copy-paste correct: its commands parse, its variables exist."""

from __future__ import annotations

import re
import shlex

import click

from tests.doc_pages import read_section
from zingyconn.config import Settings
from zingyconn.hosts.cli import main


def _section() -> str:
    return read_section("scaling", "scaling")


def _shell_lines() -> list[str]:
    """Every line of the section's ``sh`` blocks, with ``\\`` continuations joined and comments dropped."""
    blocks = re.findall(r"```sh\n(.*?)```", _section(), flags=re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.split(" #", 1)[0].strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def _parse(argv: list[str]) -> None:
    command: click.Command = main
    while isinstance(command, click.Group):
        name = argv.pop(0)
        found = command.get_command(click.Context(command), name)  # the CLI loads a command on first use
        assert found is not None, f"no command {name!r}"
        command = found
    command.make_context(command.name or "", argv)  # raises on an unknown option or a bad value


def test_every_zingyconn_command_of_the_section_parses() -> None:
    """Each ``zingyconn ...`` line is a real command with real options (click parses it without error)."""
    commands = [shlex.split(line)[1:] for line in _shell_lines() if line.startswith("zingyconn ")]

    assert len(commands) >= 5
    for argv in commands:
        _parse(list(argv))


def test_every_exported_variable_is_read_by_the_settings() -> None:
    """Each ``export ZINGYCONN_...`` of the configuration is one Settings reads, with a value it accepts."""
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in _shell_lines() if line.startswith("export ZINGYCONN_")
    )
    settings = Settings.from_env({name: value.strip("'") for name, value in exports.items()})

    assert set(exports) == {
        "ZINGYCONN_DB_URL",
        "ZINGYCONN_QUEUE_URL",
        "ZINGYCONN_KEYS",
        "ZINGYCONN_ADMIN_TOKEN",
        "ZINGYCONN_DATA_DIR",
    }
    assert settings.db_url.startswith("postgresql+psycopg://")
    assert settings.queue_url is not None
    assert settings.queue_url.startswith("redis://")
