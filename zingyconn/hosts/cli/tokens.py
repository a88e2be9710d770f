"""``zingyconn tokens create|list|revoke``: per-tenant API tokens for the command API (``/api/v1``)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from zingyconn.hosts.cli.options import echo_created, echo_json, json_option

if TYPE_CHECKING:
    from zingyconn.secrets.tokens import TokenStore

_tenant_option = click.option("--tenant", default="default", show_default=True, help="The tenant the token acts for.")


def _tokens() -> TokenStore:
    from zingyconn.config import Settings
    from zingyconn.database import create_engine
    from zingyconn.secrets.tokens import TokenStore

    return TokenStore(create_engine(Settings.from_env().db_url))


@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens (Authorization: Bearer ...) of a tenant."""


@tokens.command()
@_tenant_option
@click.option("--label", default=None, help="What the token is for (shown by `tokens list`).")
@json_option
def create(tenant: str, label: str | None, as_json: bool) -> None:
    """Create a token and print it; it is shown this once (only its SHA-256 is stored)."""
    store = _tokens()
    token = store.create(tenant, label=label)
    message = f"Created an API token of tenant {tenant!r}; it is shown this once: keep it in your secret manager."
    from zingyconn.secrets.tokens import digest

    info = next((info for info in store.list(tenant) if digest(token).startswith(info.token_id)), None)
    document = {"token": token, **(dataclasses.asdict(info) if info is not None else {})}
    echo_created(token, message, document=document, as_json=as_json)


@tokens.command(name="list")
@_tenant_option
@json_option
def list_(tenant: str, as_json: bool) -> None:
    """List the tenant's tokens by id (never the tokens themselves)."""
    found = _tokens().list(tenant)
    if as_json:
        echo_json([dataclasses.asdict(info) for info in found])
        return
    if not found:
        click.echo(
            f"Tenant {tenant!r} has no API tokens; create one with: zingyconn tokens create --tenant {tenant}", err=True
        )
    for info in found:
        created = datetime.fromtimestamp(info.created_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        click.echo(f"{info.token_id}  created {created}  {info.label or ''}".rstrip())


@tokens.command()
@click.argument("token_id")
@_tenant_option
def revoke(token_id: str, tenant: str) -> None:
    """Revoke the token with TOKEN_ID (from `tokens list`); requests with it get 401 at once."""
    _tokens().revoke(tenant, token_id)
    click.echo(f"Revoked token {token_id} of tenant {tenant!r}.", err=True)
