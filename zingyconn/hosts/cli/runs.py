"""``zingyconn runs list|show``: the run history of every kind (webhook, task, console, command) for operators."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import click

from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.errors import ValidationError
from zingyconn.history import MAX_LIST, RunHistory, RunRecord
from zingyconn.hosts.cli.options import format_time, tenant_option
from zingyconn.retention import RUN_KINDS, parse_duration


def _history() -> RunHistory:
    return RunHistory(create_engine(Settings.from_env().db_url))


def parse_since(text: str, *, now: float) -> float:
    """Return ``--since`` as a Unix time: a duration back from *now* (``2h``, ``7d``) or an ISO 8601 date/time.

    A date/time without a zone is UTC.

    Raises:
        ValidationError: Neither form.
    """
    try:
        return now - parse_duration(text, what="--since")
    except ValidationError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            "--since must be a duration back from now (30m, 12h, 7d) or an ISO date/time such as 2026-01-31T08:00 "
            f"(got {text!r}).",
            field="since",
        ) from None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def _actor(record: RunRecord) -> str:
    event = record.event if isinstance(record.event, dict) else {}
    return str(event.get("actor") or "") if record.kind == "command" else ""


def _line(record: RunRecord) -> str:
    duration = "" if record.duration_ms is None else f"{record.duration_ms:.0f} ms"
    name = record.name or "-"
    if record.version is not None:
        name = f"{name} v{record.version}"
    return (
        f"{record.id}  {format_time(record.started_at)}  {record.kind:<8} {name:<20} {record.status:<7} "
        f"{duration:>9}  {_actor(record)}"
    ).rstrip()


@click.group()
def runs() -> None:
    """List and show stored runs of every kind (webhook, task, console, command) with their masked data."""


@runs.command(name="list")
@tenant_option
@click.option("--kind", type=click.Choice(RUN_KINDS), default=None, help="Only runs of this kind.")
@click.option("--status", default=None, help="Only runs with this status (ok, failed, ...).")
@click.option("--name", default=None, help="Only runs of this hook, script or command.")
@click.option("--since", default=None, metavar="DURATION|DATETIME", help="Only runs started since (7d, 2h, or ISO).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, MAX_LIST), help="How many, newest.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of runs.")
def list_(
    tenant: str, kind: str | None, status: str | None, name: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """List a tenant's runs, newest first (a command run names who ran it: token:ID, console or cli:USER).

    \b
    Examples:
      zingyconn runs list --tenant acme --kind command --since 1d
      zingyconn runs list --tenant acme --status failed --json
    """
    start = None if since is None else parse_since(since, now=time.time())
    records = _history().list(tenant, kind=kind, status=status, name=name, since=start, limit=limit)
    if as_json:
        click.echo(json.dumps([record.to_json() for record in records], indent=2, ensure_ascii=False))
        return
    if not records:
        click.echo(f"Tenant {tenant!r} has no runs that match.", err=True)
    for record in records:
        click.echo(_line(record))


@runs.command()
@click.argument("run_id")
@click.option("--tenant", default=None, help="The run's tenant (default: whichever tenant it belongs to).")
@click.option("--json", "as_json", is_flag=True, help="Print the run as one JSON object.")
def show(run_id: str, tenant: str | None, as_json: bool) -> None:
    """Show one run: event (or command inputs), result, output, logs, error and Twilio/HTTP calls, all masked."""
    history = _history()
    record = history.find(run_id) if tenant is None else history.get(tenant, run_id)
    data = record.to_json()
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(_line(record))
    for key in ("event", "result", "error", "egress"):
        if data[key] not in (None, [], {}):
            click.echo(f"{key}: {json.dumps(data[key], indent=2, ensure_ascii=False)}")
    if record.stdout:
        click.echo(f"stdout:\n{record.stdout.rstrip()}")
