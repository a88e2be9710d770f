"""The command line page's table matches ``zingyconn --help``: one row per command, every subcommand named."""

from __future__ import annotations

import re
from pathlib import Path

import click

from tests.doc_pages import read_section
from zingyconn.hosts.cli import main

ROOT = Path(__file__).resolve().parent.parent


def loaded_commands() -> dict[str, click.Command]:
    """Return every ``zingyconn`` command by name, loaded (the group imports a command's module on first use)."""
    context = click.Context(main)
    commands = {name: main.get_command(context, name) for name in main.list_commands(context)}
    return {name: command for name, command in commands.items() if command is not None}


def table_rows() -> dict[str, str]:
    """Return the command-table rows of the ``cli`` page, by top-level command name."""
    section = read_section("cli", "cli")
    rows = re.findall(r"^\| `zingyconn ([a-z-]+)([^`]*)` \|(.+)\|$", section, flags=re.M)
    return {name: synopsis for name, synopsis, _ in rows}


def test_every_command_has_exactly_one_row() -> None:
    """Each command of ``zingyconn --help`` has a row in the table, and the table has no other."""
    section = read_section("cli", "cli")
    names = re.findall(r"^\| `zingyconn ([a-z-]+)", section, flags=re.M)

    assert sorted(names) == sorted(loaded_commands())


def test_every_subcommand_is_named_in_its_row() -> None:
    """A command group's row names each of its subcommands (``hooks add|list|show|delete``)."""
    rows = table_rows()
    missing = {
        name: sorted(set(command.commands) - set(re.findall(r"[a-z]+", rows[name])))
        for name, command in loaded_commands().items()
        if isinstance(command, click.Group)
    }

    assert {name: sub for name, sub in missing.items() if sub} == {}


def test_every_option_in_the_table_exists() -> None:
    """Options shown in a row are options of that command (or of one of its subcommands)."""
    unknown, commands_by_name = {}, loaded_commands()
    for name, synopsis in table_rows().items():
        command = commands_by_name[name]
        commands = list(command.commands.values()) if isinstance(command, click.Group) else [command]
        known = {opt for cmd in commands for param in cmd.params for opt in getattr(param, "opts", [])}
        shown = set(re.findall(r"--[a-z-]+", synopsis))
        if shown - known:
            unknown[name] = sorted(shown - known)

    assert unknown == {}
