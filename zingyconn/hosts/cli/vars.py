"""``zingyconn vars set|list|unset``: manage a tenant's variables (plain, non-secret values snippets read).

Values are given on the command line: they are not secrets (those go in a connection, whose secret is read from
stdin). A snippet reads them as ``zingyConn.vars["NAME"]``.
"""

from __future__ import annotations

import click

from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.hosts.cli.options import echo_created, echo_json, format_time, json_option, tenant_option
from zingyconn.variables import TenantVariables


def _variables() -> TenantVariables:
    return TenantVariables(create_engine(Settings.from_env().db_url))


@click.group(name="vars")
def vars_() -> None:
    """Set, list and unset tenant variables (plain values, not secrets: snippets read them as zingyConn.vars)."""


@vars_.command(name="set")
@click.argument("name")
@click.argument("value")
@tenant_option
@json_option
def set_(name: str, value: str, tenant: str, as_json: bool) -> None:
    """Set variable NAME to VALUE (creating or replacing it); prints NAME on stdout.

    \b
    Example:
      zingyconn vars set SUPPORT_NUMBER +15005550006 --tenant acme
    """
    variable = _variables().set(tenant, name, value)
    message = f"Set variable {name!r} of tenant {tenant!r}; snippets read it as zingyConn.vars[{name!r}]."
    echo_created(name, message, document=variable.to_json(), as_json=as_json)


@vars_.command(name="list")
@tenant_option
@json_option
def list_(tenant: str, as_json: bool) -> None:
    """List the tenant's variables with their values."""
    variables = _variables().list(tenant)
    if as_json:
        echo_json([variable.to_json() for variable in variables])
        return
    if not variables:
        click.echo(
            f"Tenant {tenant!r} has no variables; set one with: zingyconn vars set NAME VALUE --tenant {tenant}",
            err=True,
        )
    width = max((len(variable.name) for variable in variables), default=0)
    for variable in variables:
        click.echo(f"{variable.name:<{width}}  {variable.value}  (updated {format_time(variable.updated_at)})")


@vars_.command()
@click.argument("name")
@tenant_option
def unset(name: str, tenant: str) -> None:
    """Delete variable NAME."""
    _variables().unset(tenant, name)
    click.echo(f"Unset variable {name!r} of tenant {tenant!r}.", err=True)
