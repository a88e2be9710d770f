"""``zingyconn run FILE``: run a snippet once, in the production sandbox, for one tenant, and print its result.

The run goes through :class:`zingyconn.runtime.Runtime` (configured from ``ZINGYCONN_*``): a fresh sandbox child,
``zingyConn.twilio(name)`` bound to ``--tenant``'s connections, Twilio requests through the egress broker (to the
emulator when ``ZINGYCONN_TWILIO_BASE_URL`` is set), secrets masked, the run recorded in the history.
``--json`` prints :meth:`ZRunResult.to_json`; otherwise the result value is printed as JSON, the snippet's stdout
and logs as they came, and errors readably. Exit codes: 0 ok, 1 the run failed, 2 bad usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import click

from sandbox.limits import Kind, Limits
from sandbox.result import RunResult
from zingyconn.hosts.cli.options import parse_limit_pairs


def _event(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {text[1:]!r}: {exc.strerror}.", param_hint="--event") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}.", param_hint="--event") from None


def _limits(kind: str, pairs: tuple[str, ...]) -> Limits:
    overrides = parse_limit_pairs(pairs)
    try:
        return Limits.for_kind(kind).with_overrides(overrides)  # type: ignore[arg-type]  # click.Choice checked it
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--limit") from None


def _print_readably(result: RunResult) -> None:
    if result.stdout:
        click.echo(result.stdout, nl=not result.stdout.endswith("\n"))
    for record in result.logs:
        fields = f" {json.dumps(record['fields'], ensure_ascii=False)}" if record.get("fields") else ""
        click.echo(f"[{record['level']}] {record['message']}{fields}", err=True)
    if result.error is None:
        click.echo(json.dumps(result.value, indent=2, ensure_ascii=False))
        return
    error = result.error
    if error.type == "CompileError":
        click.echo("Error: the snippet does not compile:", err=True)
        for message in error.errors or (error.message,):
            click.echo(f"  {message}", err=True)
    elif error.type == "SnippetError":
        where = f" (line {error.line})" if error.line else ""
        click.echo(f"Error: {error.exception}: {error.message}{where}", err=True)
        if error.traceback:
            click.echo(error.traceback, err=True)
    else:
        click.echo(f"Error: {error.type}: {error.message}", err=True)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", default="default", show_default=True, help="Whose connections the snippet may use.")
@click.option("--event", "event_text", default=None, metavar="JSON|@FILE", help="The snippet's event (JSON, or @file).")
@click.option("--kind", type=click.Choice(get_args(Kind)), default="console", show_default=True,
              help="Which default limits apply.")  # fmt: skip
@click.option("--limit", "limit_pairs", multiple=True, metavar="NAME=VALUE",
              help="Override one limit, e.g. --limit output_bytes=4096 (repeatable).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the whole run result as one JSON object.")
def run(
    file: Path, tenant: str, event_text: str | None, kind: str, limit_pairs: tuple[str, ...], as_json: bool
) -> None:
    """Run the snippet in FILE once, as TENANT, and print its result.

    \b
    Examples:
      zingyconn run examples/hello.py --event '{"name": "Ada"}'
      zingyconn run job.py --tenant acme --event @event.json --json
    """
    from zingyconn.runtime import Runtime  # heavy (database, sandbox): imported when the command runs

    event = _event(event_text)
    limits = _limits(kind, limit_pairs)
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {str(file)!r}: {exc}.", param_hint="FILE") from None
    with Runtime.from_env() as runtime:
        result = runtime.run(tenant, source, event=event, kind=kind, limits=limits, name=file.name)
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        _print_readably(result)
    if not result.ok:
        raise click.exceptions.Exit(1)
