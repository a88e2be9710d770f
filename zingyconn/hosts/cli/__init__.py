"""The ``zingyconn`` command line (click).

Each command family lives in its own module of this package; this module assembles them and maps errors to
exit codes at the edge: 0 ok, 1 the snippet/command failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

import click

from sandbox.errors import SandboxError
from zingyconn.errors import ZingyConnError

#: ``module:attribute`` of every command (or command group) under ``zingyconn``.
COMMANDS: Final = (
    "zingyconn.hosts.cli.demo:demo",
    "zingyconn.hosts.cli.emulator:emulator",
    "zingyconn.hosts.cli.run:run",
    "zingyconn.hosts.cli.command:command",
    "zingyconn.hosts.cli.connections:connections",
    "zingyconn.hosts.cli.keys:keys",
    "zingyconn.hosts.cli.scripts:scripts",
    "zingyconn.hosts.cli.tasks:tasks",
    "zingyconn.hosts.cli.worker:worker",
    "zingyconn.hosts.cli.serve:serve",
    "zingyconn.hosts.cli.hooks:hooks",
    "zingyconn.hosts.cli.tokens:tokens",
    "zingyconn.hosts.cli.audit:audit",
    "zingyconn.hosts.cli.runs:runs",
    "zingyconn.hosts.cli.purge:purge",
)


class _Group(click.Group):
    """A group that turns our errors into ``Error: ...`` and their exit code instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ZingyConnError, SandboxError) as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zingyconn")
def main() -> None:
    """zingyconn: run tenants' Python snippets safely next to their Twilio credentials."""


for _path in COMMANDS:
    _module, _, _attribute = _path.partition(":")
    main.add_command(getattr(importlib.import_module(_module), _attribute))
