"""``zingyconn tasks enqueue|rerun|list|show``: queue background tasks and look at what became of them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from zingyconn.hosts.cli.options import echo_created, echo_json, json_option, parse_json_input, tenant_option

if TYPE_CHECKING:
    from zingyconn.tasks.queue import TaskQueue
    from zingyconn.tasks.store import TaskRecord


def _queue() -> tuple[TaskQueue, str]:
    # Imported here: the queue pulls in Huey and SQLAlchemy, which `zingyconn --help` and other commands never need.
    from zingyconn.config import Settings
    from zingyconn.tasks.backend import describe
    from zingyconn.tasks.queue import TaskQueue

    settings = Settings.from_env()
    return TaskQueue.from_settings(settings), describe(settings)


def _line(record: TaskRecord) -> str:
    when = datetime.fromtimestamp(record.created_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{record.id:<40} {record.tenant}/{record.script:<24} {record.state:<10} attempts {record.attempts}  {when}"


@click.group()
def tasks() -> None:
    """Queue background tasks (a script run with a payload), re-run failed ones, and inspect them."""


@tasks.command()
@click.argument("script")
@tenant_option
@click.option("--payload", default=None, metavar="JSON|@FILE", help="The run's `event` (JSON, or @file; default {}).")
@json_option
def enqueue(script: str, tenant: str, payload: str | None, as_json: bool) -> None:
    """Queue a run of SCRIPT; a worker (`zingyconn worker`, or `zingyconn serve`) runs it.

    Prints the task id on stdout (the task as JSON with --json).

    \b
    Example:
      task=$(zingyconn tasks enqueue digest --payload '{"to": "+15551234567"}')
    """
    event = parse_json_input(payload, "--payload")
    queue, where = _queue()
    record = queue.enqueue(tenant, script, event, source="cli")
    message = f"Queued task {record.id} (script {script!r}, tenant {tenant!r}) on {where}."
    echo_created(record.id, message, document=record.to_json(), as_json=as_json)


@tasks.command()
@click.argument("task_id")
def cancel(task_id: str) -> None:
    """Cancel a queued task, or one waiting for its next attempt (a running attempt is not stopped)."""
    queue, _where = _queue()
    record = queue.store.cancel(task_id)
    click.echo(f"Cancelled task {record.id} (script {record.script!r}, tenant {record.tenant!r}).", err=True)


@tasks.command()
@click.argument("run_id")
@json_option
def rerun(run_id: str, as_json: bool) -> None:
    """Queue a failed or cancelled task again, by its task id or the id of one of its runs; prints the task id.

    The task keeps its id, which is the idempotency key of its sends: messages it already sent are returned from
    the store, not sent again.
    """
    queue, where = _queue()
    record = queue.rerun(run_id)
    message = f"Re-queued task {record.id} (script {record.script!r}, tenant {record.tenant!r}) on {where}."
    echo_created(record.id, message, document=record.to_json(), as_json=as_json)


@tasks.command(name="list")
@click.option("--tenant", default=None, help="Only this tenant's tasks.")
@click.option(
    "--state", type=click.Choice(["queued", "running", "retrying", "succeeded", "failed", "cancelled"]), default=None
)
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@json_option
def list_(tenant: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """List recent tasks, newest first."""
    queue, _ = _queue()
    found = queue.store.recent(tenant, state=state, limit=limit)
    if as_json:
        echo_json([record.to_json() for record in found])
        return
    for record in found:
        click.echo(_line(record))


@tasks.command()
@click.argument("task_id")
@json_option
def show(task_id: str, as_json: bool) -> None:
    """Show one task as JSON: state, attempts, latest error, and each attempt's run (status, duration, error).

    The output is JSON with or without --json (accepted for symmetry with the other show commands).
    """
    from zingyconn.history import RunHistory

    queue, _ = _queue()
    record = queue.store.get(task_id)
    attempts = RunHistory(queue.store.engine).list(record.tenant, task_id=task_id, limit=100)
    runs = [
        {
            "run_id": run.id,
            "attempt": run.attempt,
            "status": run.status,
            "duration_ms": run.duration_ms,
            "error": run.error,
        }
        for run in sorted(attempts, key=lambda run: run.attempt)
    ]
    echo_json({**record.to_json(), "runs": runs})
