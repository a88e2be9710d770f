"""``zingyconn hooks add|list|show|delete|history|diff|rollback``: a tenant's webhook handlers, and their versions."""

from __future__ import annotations

import json
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
def hooks() -> None:
    """Add, inspect, version and delete webhook hooks (snippets served at /hooks/TENANT/NAME by `zingyconn serve`)."""


@hooks.command()
@click.argument("name")
@tenant_option
@click.option("--file", "file", type=click.File("r"), required=True, help="The snippet ('-' for stdin).")
@click.option("--verify-with", default=None, metavar="CONNECTION", help="Check X-Twilio-Signature with its Auth Token.")
@click.option(
    "--limit", "limits", multiple=True, metavar="NAME=VALUE", help="Override a webhook limit (wall_seconds=2)."
)
@click.option("--message", "-m", default=None, help="Why: kept with the version (see history).")
@isolation_option
@json_option
def add(
    name: str,
    tenant: str,
    file: IO[str],
    verify_with: str | None,
    limits: tuple[str, ...],
    message: str | None,
    isolation: str,
    as_json: bool,
) -> None:
    """Save hook NAME (replacing one of the same name); the snippet is compiled before it is saved.

    Prints the hook's name on stdout (the hook as JSON with --json).

    \b
    Example:
      zingyconn hooks add sms --file examples/auto_reply.py --verify-with main
      zingyconn hooks add sms --file examples/auto_reply.py --verify-with main --isolation instance
    """
    from zingyconn.config import Settings
    from zingyconn.hosts.webhooks import check_verifier
    from zingyconn.secrets.store import ConnectionStore

    if verify_with is not None:
        check_verifier(ConnectionStore.from_settings(Settings.from_env()), tenant, verify_with)
    overrides = parse_limit_pairs(limits)
    hook = catalog_from_settings().put_hook(
        tenant, name, file.read(), verify_with=verify_with, limits=overrides, author=cli_actor(), message=message,
        isolation=isolation,
    )  # fmt: skip
    check = f"signatures checked with {verify_with!r}" if verify_with else "NO signature check"
    said = f"Saved hook {name!r} in tenant {tenant!r} as version {hook.version} ({check}); "
    echo_created(name, f"{said}it answers at /hooks/{tenant}/{name}.", document=hook.to_json(), as_json=as_json)


@hooks.command(name="list")
@tenant_option
@json_option
def list_(tenant: str, as_json: bool) -> None:
    """List the tenant's hooks."""
    found = catalog_from_settings().list_hooks(tenant)
    if as_json:
        echo_json([hook.to_json() for hook in found])
        return
    if not found:
        hint = f"zingyconn hooks add NAME --file F --tenant {tenant}"
        click.echo(f"Tenant {tenant!r} has no hooks; add one with: {hint}", err=True)
        return
    for hook in found:
        click.echo(f"{hook.name:<30} verify with {hook.verify_with or '-':<20} updated {format_time(hook.updated_at)}")


@hooks.command()
@click.argument("name")
@tenant_option
@json_option
def show(name: str, tenant: str, as_json: bool) -> None:
    """Show hook NAME: URL path, validation connection, limit overrides and source."""
    hook = catalog_from_settings().get_hook(tenant, name)
    if as_json:
        echo_json(hook.to_json())
        return
    click.echo(f"hook:        /hooks/{hook.tenant}/{hook.name}")
    click.echo(f"verify with: {hook.verify_with or '- (no signature check)'}")
    click.echo(f"limits:      {json.dumps(dict(hook.limits)) if hook.limits else 'webhook defaults'}")
    click.echo(f"isolation:   {hook.isolation}")
    click.echo(f"version:     {hook.version} (zingyconn hooks history {hook.name} --tenant {hook.tenant})")
    click.echo(f"updated:     {format_time(hook.updated_at)}\n")
    click.echo(hook.source.rstrip("\n"))


@hooks.command()
@click.argument("name")
@tenant_option
def delete(name: str, tenant: str) -> None:
    """Delete hook NAME (its URL then answers 404)."""
    catalog_from_settings().delete_hook(tenant, name)
    click.echo(f"Deleted hook {name!r} of tenant {tenant!r}.", err=True)


add_version_commands(hooks, "hook")
