"""``zingyconn schedules list``: a tenant's scheduled scripts, each with its cron, time zone and next runs."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from zingyconn.hosts.cli.options import catalog_from_settings, echo_json, json_option, tenant_option

#: Next runs listed per schedule unless --count says otherwise.
DEFAULT_COUNT = 3


@click.group()
def schedules() -> None:
    """List the cron schedules of scripts (set them with `zingyconn scripts add NAME --cron EXPR --tz ZONE`)."""


@schedules.command(name="list")
@tenant_option
@click.option(
    "--count", default=DEFAULT_COUNT, show_default=True, type=click.IntRange(1, 50), help="Next runs per schedule."
)
@json_option
def list_(tenant: str, count: int, as_json: bool) -> None:
    """List the tenant's scheduled scripts: cron, zone and the next runs (in the schedule's zone)."""
    now = datetime.now(UTC)
    found = [
        (script, schedule)
        for script in catalog_from_settings().list_scripts(tenant, scheduled_only=True)
        if (schedule := script.schedule()) is not None
    ]
    if as_json:
        echo_json(
            [
                {
                    "name": script.name,
                    "cron": schedule.expression,
                    "timezone": schedule.timezone,
                    "next_runs": [run.isoformat() for run in schedule.next_runs(now, count)],
                }
                for script, schedule in found
            ]
        )
        return
    if not found:
        hint = f"zingyconn scripts add NAME --file F --cron '0 7 * * MON-FRI' --tz Europe/Paris --tenant {tenant}"
        click.echo(f"Tenant {tenant!r} has no scheduled scripts; schedule one with: {hint}", err=True)
        return
    for script, schedule in found:
        runs = ", ".join(run.strftime("%Y-%m-%d %H:%M %Z") for run in schedule.next_runs(now, count))
        click.echo(f"{script.name:<30} {schedule.expression:<20} {schedule.timezone:<20} next {runs}")
