"""``zingyconn run FILE``: run a snippet once, in the production sandbox, for one tenant, and print its result.

The run goes through :class:`zingyconn.runtime.Runtime` (configured from ``ZINGYCONN_*``): a fresh sandbox child,
``zingyConn.twilio(name)`` bound to ``--tenant``'s connections, Twilio requests through the egress broker (to the
emulator when ``ZINGYCONN_TWILIO_BASE_URL`` is set), secrets masked, the run recorded in the history.
``--json`` prints :meth:`MaskedRunResult.to_json`; otherwise the result value is printed as JSON, the snippet's stdout
and logs as they came, and errors readably. Exit codes: 0 ok, 1 the run failed, 2 bad usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from sandbox.errors import (
    CompileError,
    MemoryLimitExceededError,
    OutputLimitExceededError,
    QuotaExceededError,
    SnippetError,
    TimeLimitExceededError,
)
from sandbox.limits import Limits
from sandbox.result import RunResult
from zingyconn.hosts.cli.options import parse_json_input, parse_limit_pairs
from zingyconn.kinds import KINDS, limits_for

if TYPE_CHECKING:
    from zingyconn.runtime import Runtime


#: The limits behind each limit error: the CLI prints their values and how to raise them.
LIMITS_OF_ERROR: Final = {
    TimeLimitExceededError.__name__: ("wall_seconds", "cpu_seconds"),
    MemoryLimitExceededError.__name__: ("memory_bytes",),
    OutputLimitExceededError.__name__: ("output_bytes", "result_bytes"),
    QuotaExceededError.__name__: ("egress_requests",),
}


def limit_hint(error_type: str, limits: Limits) -> str:
    """Return the sentence that names the limits behind *error_type* and how to raise them ("" for other errors)."""
    names = LIMITS_OF_ERROR.get(error_type, ())
    if not names:
        return ""
    values = ", ".join(f"{name}={getattr(limits, name):g}" for name in names)
    options = " or ".join(f"--limit {name}=VALUE" for name in names)
    return f" This run's limits: {values}; raise them with {options}."


def _limits(kind: str, pairs: tuple[str, ...]) -> Limits:
    overrides = parse_limit_pairs(pairs)
    try:
        return limits_for(kind).with_overrides(overrides)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--limit") from None


def _offer_enqueue(runtime: Runtime) -> None:
    """Answer ``zingyConn.enqueue`` in this run; the task queue is opened only if the snippet calls it.

    The task lands in the configured queue (``ZINGYCONN_QUEUE_URL``, else SQLite in the data directory), where
    ``zingyconn worker`` or ``zingyconn serve`` runs it, as when a webhook or task enqueues.
    """

    from zingyconn.egress.protocol import OP_ENQUEUE

    def enqueue(tenant: str, request: Any, run_key: str | None) -> Any:
        from zingyconn.hosts.composition import task_queue  # Huey: loaded only by a snippet that enqueues

        return task_queue(runtime).enqueue_from_snippet(tenant, request, run_key)  # task_queue registers it too

    runtime.register_op(OP_ENQUEUE, enqueue)


def _print_readably(result: RunResult, limits: Limits) -> None:
    if result.stdout:
        click.echo(result.stdout, nl=not result.stdout.endswith("\n"))
    for record in result.logs:
        fields = f" {json.dumps(record['fields'], ensure_ascii=False)}" if record.get("fields") else ""
        click.echo(f"[{record['level']}] {record['message']}{fields}", err=True)
    if result.error is None:
        click.echo(json.dumps(result.value, indent=2, ensure_ascii=False))
        return
    error = result.error
    if error.is_a(CompileError):
        click.echo("Error: the snippet does not compile:", err=True)
        for message in error.errors or (error.message,):
            click.echo(f"  {message}", err=True)
    elif error.is_a(SnippetError):
        where = f" (line {error.line})" if error.line else ""
        click.echo(f"Error: {error.exception}: {error.message}{where}", err=True)
        if error.traceback:
            click.echo(error.traceback, err=True)
    else:
        click.echo(f"Error: {error.type}: {error.message}{limit_hint(error.type, limits)}", err=True)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", default="default", show_default=True, help="Whose connections the snippet may use.")
@click.option("--event", "event_text", default=None, metavar="JSON|@FILE",
              help="The snippet's event (JSON, or @file; default {}).")  # fmt: skip
@click.option("--kind", type=click.Choice(KINDS), default="console", show_default=True,
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
      zingyconn run examples/keyword_router.py --event '{"Body": "HELP", "From": "+15551234567"}'
      zingyconn run job.py --tenant acme --event @event.json --json
    """
    from zingyconn.runtime import Runtime  # heavy (database, sandbox): imported when the command runs

    event = parse_json_input(event_text, "--event")
    limits = _limits(kind, limit_pairs)
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {str(file)!r}: {exc}.", param_hint="FILE") from None
    with Runtime.from_env() as runtime:
        _offer_enqueue(runtime)
        result = runtime.run(tenant, source, event=event, kind=kind, limits=limits, name=file.name)
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        _print_readably(result, limits)
    if not result.ok:
        raise click.exceptions.Exit(1)
