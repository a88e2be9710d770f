"""The ``zingyconn`` command line (click).

Each command family lives in its own module of this package, imported only when that command runs: ``zingyconn
--help`` reads the one-line help of every command from :data:`COMMANDS` and imports none of them (the server,
emulator and demo modules pull in uvicorn, Starlette, SQLAlchemy and aiohttp). This module maps errors to exit
codes at the edge, per the table in :mod:`zingyconn.hosts.cli.faults`: 0 ok, 1 the run/command failed, 2 bad usage,
input or configuration, 3 an unusable environment (database, queue, files, port).
"""

from __future__ import annotations

import importlib
from typing import Any, Final

import click

from zingyconn.errors import ZingyConnError
from zingyconn.hosts.cli.faults import ENVIRONMENT_EXIT_CODE, describe_fault

#: Every command under ``zingyconn``: name -> (``module:attribute``, its one-line help, shown by ``zingyconn --help``
#: and set as the command's ``short_help`` when it is loaded, so the two cannot differ).
COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "demo": ("zingyconn.hosts.cli.demo:demo", "Run everything locally: store, Twilio emulator, demo tenant, server."),
    "emulator": ("zingyconn.hosts.cli.emulator:emulator", "Serve a local Twilio emulator (the Messages API)."),
    "run": ("zingyconn.hosts.cli.run:run", "Run the snippet in FILE once, as TENANT, and print its result."),
    "command": ("zingyconn.hosts.cli.command:command", "Run a connection command and print its JSON output."),
    "connections": ("zingyconn.hosts.cli.connections:connections", "Add, list, show, test and delete connections."),
    "vars": ("zingyconn.hosts.cli.vars:vars_", "Set, list and unset tenant variables (plain values snippets read)."),
    "keys": ("zingyconn.hosts.cli.keys:keys", "Create, rotate and retire the master keys of connection secrets."),
    "scripts": ("zingyconn.hosts.cli.scripts:scripts", "Add, list, show, version and delete background-task scripts."),
    "schedules": ("zingyconn.hosts.cli.schedules:schedules", "List cron schedules with their zones and next runs."),
    "tasks": ("zingyconn.hosts.cli.tasks:tasks", "Queue, re-run, cancel, list and show background tasks."),
    "worker": ("zingyconn.hosts.cli.worker:worker", "Run queued tasks and cron schedules until stopped."),
    "serve": ("zingyconn.hosts.cli.serve:serve", "Serve webhooks, the command API, the console and tasks."),
    "hooks": ("zingyconn.hosts.cli.hooks:hooks", "Add, list, show, version and delete webhook hooks."),
    "tokens": ("zingyconn.hosts.cli.tokens:tokens", "Create, list and revoke tenants' API tokens."),
    "audit": ("zingyconn.hosts.cli.audit:audit", "Read the audit trail of console and admin API changes."),
    "runs": ("zingyconn.hosts.cli.runs:runs", "List and show stored runs of every kind."),
    "purge": ("zingyconn.hosts.cli.purge:purge", "Delete history and records older than their retention."),
}


class _Group(click.Group):
    """A group that loads commands on use and turns errors into ``Error: ...`` and an exit code, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[cmd_name][0].partition(":")
        found: click.Command = getattr(importlib.import_module(module), attribute)
        found.short_help = COMMANDS[cmd_name][1]
        return found

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with their one-line help from :data:`COMMANDS`, without importing any of them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ZingyConnError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            # Imported here: the sandbox package is not needed by --help; by the time a command failed it is loaded.
            from sandbox.errors import SandboxError

            if isinstance(exc, SandboxError):
                click.echo(f"Error: {exc}", err=True)
                ctx.exit(exc.exit_code)
            message = describe_fault(exc)
            if message is None:
                raise
            click.echo(f"Error: {message}", err=True)
            ctx.exit(ENVIRONMENT_EXIT_CODE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zingyconn")
def main() -> None:
    """zingyconn: run tenants' Python snippets safely next to their Twilio credentials."""
    # Warnings (a master key file just created, a tenant over its history quota) reach the one log stream, readable
    # on a terminal and JSON otherwise; serve, worker and demo raise the level to INFO for their own logs. Imported
    # here: `zingyconn --help` never gets this far, and the logging package is a tenth of its start-up.
    import logging

    from zingyconn.hosts.logs import configure_logging

    configure_logging(level=logging.WARNING, access_log=False)
