"""``zingyconn tokens create|list|revoke``: per-tenant API tokens for the command API (``/api/v1``)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.secrets.tokens import TokenStore

_tenant_option = click.option("--tenant", default="default", show_default=True, help="The tenant the token acts for.")


def _tokens() -> TokenStore:
    return TokenStore(create_engine(Settings.from_env().db_url))


@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens (Authorization: Bearer ...) of a tenant."""


@tokens.command()
@_tenant_option
@click.option("--label", default=None, help="What the token is for (shown by `tokens list`).")
def create(tenant: str, label: str | None) -> None:
    """Create a token and print it; it is shown this once (only its SHA-256 is stored)."""
    click.echo(_tokens().create(tenant, label=label))


@tokens.command(name="list")
@_tenant_option
def list_(tenant: str) -> None:
    """List the tenant's tokens by id (never the tokens themselves)."""
    found = _tokens().list(tenant)
    if not found:
        click.echo(f"Tenant {tenant!r} has no API tokens; create one with: zingyconn tokens create --tenant {tenant}")
    for info in found:
        created = datetime.fromtimestamp(info.created_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        click.echo(f"{info.token_id}  created {created}  {info.label or ''}".rstrip())


@tokens.command()
@click.argument("token_id")
@_tenant_option
def revoke(token_id: str, tenant: str) -> None:
    """Revoke the token with TOKEN_ID (from `tokens list`); requests with it get 401 at once."""
    _tokens().revoke(tenant, token_id)
    click.echo(f"Revoked token {token_id} of tenant {tenant!r}.")
