"""``zingyconn audit list``: the audit trail of the console and the admin API (who changed what, for which tenant,
when)."""

from __future__ import annotations

import json

import click

from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.hosts.audit import MAX_LIST_LIMIT, AuditTrail
from zingyconn.hosts.cli.options import format_time


@click.group()
def audit() -> None:
    """Read the audit trail of console and admin API changes."""


@audit.command(name="list")
@click.option("--tenant", default=None, help="Only this tenant's events (default: every tenant's, and sign-ins).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, MAX_LIST_LIMIT), help="Most events.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (newest first) instead of lines.")
def list_(tenant: str | None, limit: int, as_json: bool) -> None:
    """List audit events, newest first: when, who, from where, tenant, action, target and details (no secrets)."""
    events = AuditTrail(create_engine(Settings.from_env().db_url)).list(tenant=tenant, limit=limit)
    if as_json:
        click.echo(json.dumps([event.to_json() for event in events], indent=2, ensure_ascii=False))
        return
    if not events:
        click.echo("No audit events" + (f" for tenant {tenant!r}." if tenant else "."))
    for event in events:
        detail = " ".join(f"{key}={value}" for key, value in event.detail.items())
        fields = [format_time(event.at), event.actor, event.client or "-", event.tenant or "-", event.action]
        click.echo("  ".join([*fields, event.target or "-", detail]).rstrip())
