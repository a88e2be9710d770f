"""``zingyconn scripts add|list|show|delete|history|diff|rollback``: a tenant's background-task scripts.

Scripts run as background tasks, on demand or on a cron schedule; every save is a version.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import IO

import click

from zingyconn.hosts.cli.options import (
    catalog_from_settings,
    cli_actor,
    echo_created,
    echo_json,
    format_time,
    isolation_option,
    json_option,
    parse_limit_pairs,
    tenant_option,
)
from zingyconn.hosts.cli.versions import add_version_commands


@click.group()
def scripts() -> None:
    """Add, inspect, version and delete background-task scripts (run by `zingyconn tasks enqueue` or on a cron)."""


@scripts.command()
@click.argument("name")
@tenant_option
@click.option("--file", "file", type=click.File("r"), required=True, help="The snippet ('-' for stdin).")
@click.option("--cron", default=None, help="Run on this schedule, e.g. '0 7 * * MON-FRI' or @daily.")
@click.option("--tz", "timezone", default=None, metavar="ZONE", help="Read --cron in this IANA zone (default UTC).")
@click.option("--limit", "limits", multiple=True, metavar="NAME=VALUE", help="Override a task limit (wall_seconds=60).")
@click.option("--message", "-m", default=None, help="Why: kept with the version (see history).")
@isolation_option
@json_option
def add(
    name: str,
    tenant: str,
    file: IO[str],
    cron: str | None,
    timezone: str | None,
    limits: tuple[str, ...],
    message: str | None,
    isolation: str,
    as_json: bool,
) -> None:
    """Save script NAME (replacing one of the same name); the snippet is compiled before it is saved.

    Prints the script's name on stdout (the script as JSON with --json).

    \b
    Example:
      zingyconn scripts add digest --file examples/nightly_digest.py --cron '0 7 * * MON-FRI' --tz Europe/Paris
    """
    overrides = parse_limit_pairs(limits)
    script = catalog_from_settings().put_script(
        tenant, name, file.read(), cron=cron, timezone=timezone, limits=overrides, author=cli_actor(), message=message,
        isolation=isolation,
    )  # fmt: skip
    enqueue = f"zingyconn tasks enqueue {name} --tenant {tenant}"
    schedule = f"on cron {script.cron!r} ({script.timezone})" if script.cron else f"on demand: {enqueue}"
    said = f"Saved script {name!r} in tenant {tenant!r} as version {script.version}; it runs {schedule}."
    echo_created(name, said, document=script.to_json(), as_json=as_json)


@scripts.command(name="list")
@tenant_option
@json_option
def list_(tenant: str, as_json: bool) -> None:
    """List the tenant's scripts."""
    found = catalog_from_settings().list_scripts(tenant)
    if as_json:
        echo_json([script.to_json() for script in found])
        return
    if not found:
        hint = f"zingyconn scripts add NAME --file F --tenant {tenant}"
        click.echo(f"Tenant {tenant!r} has no scripts; add one with: {hint}", err=True)
        return
    for script in found:
        click.echo(f"{script.name:<30} {script.cron or '-':<20} updated {format_time(script.updated_at)}")


@scripts.command()
@click.argument("name")
@tenant_option
@json_option
def show(name: str, tenant: str, as_json: bool) -> None:
    """Show script NAME: schedule, limit overrides and source."""
    script = catalog_from_settings().get_script(tenant, name)
    if as_json:
        echo_json(script.to_json())
        return
    click.echo(f"script:  {script.tenant}/{script.name}")
    schedule = script.schedule()
    click.echo(f"cron:    {f'{script.cron} ({script.timezone})' if script.cron else '-'}")
    if schedule is not None:
        click.echo(f"next:    {schedule.next_runs(datetime.now(UTC), 1)[0].isoformat()}")
    click.echo(f"limits:  {json.dumps(dict(script.limits)) if script.limits else 'task defaults'}")
    click.echo(f"isolation: {script.isolation}")
    click.echo(f"version: {script.version} (zingyconn scripts history {script.name} --tenant {script.tenant})")
    click.echo(f"updated: {format_time(script.updated_at)}\n")
    click.echo(script.source.rstrip("\n"))


@scripts.command()
@click.argument("name")
@tenant_option
def delete(name: str, tenant: str) -> None:
    """Delete script NAME (queued tasks of it then fail with "deleted")."""
    catalog_from_settings().delete_script(tenant, name)
    click.echo(f"Deleted script {name!r} of tenant {tenant!r}.", err=True)


add_version_commands(scripts, "script")
