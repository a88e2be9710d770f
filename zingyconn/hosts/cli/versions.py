"""``zingyconn hooks|scripts history|diff|rollback``: the saved versions of a hook or script.

Both families get the same three commands from :func:`add_version_commands`; every ``add`` is a version, and a
rollback saves an old version again as the newest one, so nothing is ever lost by rolling back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from zingyconn.hosts.cli.options import (
    catalog_from_settings,
    cli_actor,
    echo_json,
    format_time,
    json_option,
    tenant_option,
)

if TYPE_CHECKING:
    from zingyconn.catalog import SnippetKind


def add_version_commands(group: click.Group, kind: SnippetKind) -> None:
    """Add ``history``, ``diff`` and ``rollback`` for *kind* (``"hook"`` or ``"script"``) to *group*."""
    family = f"{kind}s"

    @group.command(name="history")
    @click.argument("name")
    @tenant_option
    @json_option
    def history(name: str, tenant: str, as_json: bool) -> None:
        found = catalog_from_settings().versions(kind, tenant, name)
        if as_json:
            echo_json([version.to_json(with_source=False) for version in found])
            return
        for version in found:
            current = "*" if version is found[0] else " "
            message = version.message or ""
            click.echo(
                f"{current} v{version.version:<5} {format_time(version.created_at)}  {version.author:<24} {message}"
            )
        click.echo(
            f"* is the current version; compare with: zingyconn {family} diff {name} --tenant {tenant}", err=True
        )

    history.help = f"List the saved versions of {kind} NAME, newest (current) first: who, when and why."

    @group.command(name="diff")
    @click.argument("name")
    @tenant_option
    @click.option("--from", "old", type=int, default=None, help="The older version (default: the one before --to).")
    @click.option("--to", "new", type=int, default=None, help="The newer version (default: the current one).")
    def diff(name: str, tenant: str, old: int | None, new: int | None) -> None:
        catalog = catalog_from_settings()
        if new is None:
            new = catalog.versions(kind, tenant, name)[0].version
        if old is None:
            old = max(1, new - 1)
        text = catalog.diff(kind, tenant, name, old, new)
        if text:
            click.echo(text, nl=False)
        else:
            click.echo(f"Versions {old} and {new} of {kind} {name!r} are the same.", err=True)

    diff.help = f"Print the unified diff of two versions of {kind} NAME (settings and source)."

    @group.command(name="rollback")
    @click.argument("name")
    @tenant_option
    @click.option("--to", "to", type=int, required=True, help="The version to bring back.")
    def rollback(name: str, tenant: str, to: int) -> None:
        version = catalog_from_settings().rollback(kind, tenant, name, to=to, author=cli_actor())
        click.echo(str(version))
        click.echo(
            f"Rolled {kind} {name!r} of tenant {tenant!r} back to version {to}, saved as version {version}.", err=True
        )

    rollback.help = (
        f"Save version N of {kind} NAME again, as its newest version (a rollback is a version: it can be undone)."
        " Prints the new version's number."
    )
