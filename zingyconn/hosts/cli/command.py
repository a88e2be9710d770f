"""``zingyconn command CONNECTION COMMAND``: run one connection command (sendMessage, listMessages, ...).

Prints the command's output as JSON on stdout. A failure prints the one JSON error shape,
``{"ok": false, "error": {...}}``, also on stdout (so a script can parse either), and exits 1 when the command
failed (Twilio refused it, a page flow) or 2 for bad input or configuration.
"""

from __future__ import annotations

import json
from typing import NoReturn

import click

from sandbox.errors import SandboxError
from zingyconn.errors import ZingyConnError
from zingyconn.hosts.cli.options import cli_actor, parse_json_input
from zingyconn.twilio.commands import COMMANDS


def _fail(exc: ZingyConnError | SandboxError) -> NoReturn:
    error = exc.to_json() if isinstance(exc, ZingyConnError) else {"type": type(exc).__name__, "message": str(exc)}
    click.echo(json.dumps({"ok": False, "error": error}, indent=2, ensure_ascii=False))
    raise click.exceptions.Exit(exc.exit_code)


@click.command()
@click.argument("connection")
@click.argument("command", type=click.Choice(COMMANDS))
@click.option("--tenant", default="default", show_default=True, help="The tenant (app) that owns the connection.")
@click.option("--input", "input_", default=None, metavar="JSON|@FILE", help="The command's inputs (JSON, or @file).")
@click.option("--flow", type=click.Choice(["cloud", "page"]), default="cloud", show_default=True,
              help="Where the call comes from; page (browser) flows are refused.")  # fmt: skip
@click.option("--idempotency-key", default=None, help="sendMessage only: the same key within 24 h sends once.")
def command(
    connection: str, command: str, tenant: str, input_: str | None, flow: str, idempotency_key: str | None
) -> None:
    """Run COMMAND with connection CONNECTION and print its JSON output.

    \b
    Examples:
      echo '{"toPhone": "+15551234567", "fromPhone": "+15005550006", "msg": "hi"}' > send.json
      zingyconn command primary sendMessage --input @send.json
      zingyconn command primary listMessages --input '{"criteria": {"to": "+15551234567"}, "limit": 10}'
      zingyconn command primary updateMessage --input '{"sid": "SM...", "customProps": {"body": ""}}'
    """
    from zingyconn.runtime import Runtime  # the runtime opens the store; keep `--help` fast and store-free

    try:
        inputs = parse_json_input(input_, "--input")
        with Runtime.from_env() as runtime:
            output = runtime.command(
                tenant, connection, command, inputs, flow=flow, idempotency_key=idempotency_key, actor=cli_actor()
            )
    except (ZingyConnError, SandboxError) as exc:
        _fail(exc)
    click.echo(json.dumps(output, indent=2, ensure_ascii=False))
