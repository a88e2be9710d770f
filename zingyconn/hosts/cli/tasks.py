"""``zingyconn tasks enqueue|rerun|list|show``: queue background tasks and look at what became of them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from zingyconn.config import Settings
from zingyconn.errors import ValidationError
from zingyconn.history import RunHistory
from zingyconn.hosts.cli.options import tenant_option
from zingyconn.tasks.backend import describe
from zingyconn.tasks.queue import TaskQueue
from zingyconn.tasks.store import TaskRecord


def _queue() -> tuple[TaskQueue, str]:
    settings = Settings.from_env()
    return TaskQueue.from_settings(settings), describe(settings)


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"--payload is not valid JSON: {exc}.", field="payload") from None


def _line(record: TaskRecord) -> str:
    when = datetime.fromtimestamp(record.created_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{record.id:<40} {record.tenant}/{record.script:<24} {record.state:<10} attempts {record.attempts}  {when}"


@click.group()
def tasks() -> None:
    """Queue background tasks (a script run with a payload), re-run failed ones, and inspect them."""


@tasks.command()
@click.argument("script")
@tenant_option
@click.option("--payload", default=None, metavar="JSON|@FILE", help="The run's `event` (JSON, or @file).")
def enqueue(script: str, tenant: str, payload: str | None) -> None:
    """Queue a run of SCRIPT; a worker (`zingyconn worker`, or `zingyconn serve`) runs it.

    \b
    Example:
      zingyconn tasks enqueue digest --payload '{"to": "+15551234567"}'
    """
    queue, where = _queue()
    record = queue.enqueue(tenant, script, _payload(payload), source="cli")
    click.echo(f"Queued task {record.id} (script {script!r}, tenant {tenant!r}) on {where}.")


@tasks.command()
@click.argument("run_id")
def rerun(run_id: str) -> None:
    """Queue a failed task again, by its task id or the id of one of its runs.

    The task keeps its id, which is the idempotency key of its sends: messages it already sent are returned from
    the store, not sent again.
    """
    queue, where = _queue()
    record = queue.rerun(run_id)
    click.echo(f"Re-queued task {record.id} (script {record.script!r}, tenant {record.tenant!r}) on {where}.")


@tasks.command(name="list")
@click.option("--tenant", default=None, help="Only this tenant's tasks.")
@click.option("--state", type=click.Choice(["queued", "running", "retrying", "succeeded", "failed"]), default=None)
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
def list_(tenant: str | None, state: str | None, limit: int) -> None:
    """List recent tasks, newest first."""
    queue, _ = _queue()
    for record in queue.store.recent(tenant, state=state, limit=limit):
        click.echo(_line(record))


@tasks.command()
@click.argument("task_id")
def show(task_id: str) -> None:
    """Show one task as JSON: state, attempts, latest error, and each attempt's run (status, duration, error)."""
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
    click.echo(json.dumps({**record.to_json(), "runs": runs}, indent=2))
