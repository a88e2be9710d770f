"""``zingyconn purge``: delete stored records older than their retention now, or forget one tenant's history."""

from __future__ import annotations

import json

import click

from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.purge import Purger
from zingyconn.retention import parse_duration

#: How each table reads in the text report.
_TABLE_NAMES = {
    "runs": "runs",
    "webhook_responses": "webhook replay records",
    "sent_messages": "send-ledger keys",
    "tasks": "finished tasks",
}


@click.command()
@click.option("--older-than", default=None, metavar="DURATION", help="Instead of the retention: 7d, 12h, 30m, 2w.")
@click.option("--tenant", default=None, help="Only this tenant's records (default: every tenant).")
@click.option("--all", "everything", is_flag=True, help="With --tenant: forget all of that tenant's history.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
def purge(older_than: str | None, tenant: str | None, everything: bool, dry_run: bool, as_json: bool) -> None:
    """Delete run history, webhook replay records, send-ledger keys and finished tasks older than their retention.

    `serve` and `worker` already do this on their own every ZINGYCONN_PURGE_EVERY; this command does it now, in
    small batches that never lock the store for long. --older-than never goes below the 4 h of webhook replay
    records or the 24 h of send-ledger keys (they stop duplicate runs and sends).

    \b
    Examples:
      zingyconn purge --dry-run
      zingyconn purge --older-than 7d --tenant acme
      zingyconn purge --tenant acme --all        # forget everything stored about acme's runs
    """
    settings = Settings.from_env()
    older_than_seconds = None if older_than is None else parse_duration(older_than, what="--older-than")
    purger = Purger(create_engine(settings.db_url), settings.retention)
    report = purger.purge(tenant=tenant, older_than_seconds=older_than_seconds, everything=everything, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    counts = ", ".join(f"{report.counts[table]} {name}" for table, name in _TABLE_NAMES.items())
    scope = "" if tenant is None else f" of tenant {tenant!r}"
    click.echo(f"{'Would delete' if dry_run else 'Deleted'} {counts}{scope}.")
