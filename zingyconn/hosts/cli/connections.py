"""``zingyconn connections add|list|show|delete|test``: manage a tenant's Twilio and HTTP connections.

Secrets are read from a hidden prompt (a terminal) or from stdin (a pipe), never from the command line, where they
would end up in shell history and in ``ps`` output.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any

import click

from zingyconn.config import Settings
from zingyconn.connection_types import Profile, connection_type
from zingyconn.errors import ConnectionNotFoundError, InvalidConnectionError
from zingyconn.hosts.cli.options import echo_created, echo_json, format_time, json_option, tenant_option
from zingyconn.http.profile import AUTH_SCHEMES, HttpProfile
from zingyconn.secrets.store import ConnectionStore, ConnectionSummary
from zingyconn.twilio.profile import TwilioProfile


def _store() -> ConnectionStore:
    return ConnectionStore.from_settings(Settings.from_env())


def _summary_json(summary: ConnectionSummary) -> dict[str, Any]:
    return dataclasses.asdict(summary)


def _read_secret(what: str) -> str:
    if sys.stdin.isatty():
        secret = click.prompt(what, hide_input=True, default="", show_default=False)
    else:
        secret = sys.stdin.readline()
    return str(secret).strip()


@click.group()
def connections() -> None:
    """Add, inspect, test and delete Twilio and HTTP connections (secrets are stored encrypted)."""


@connections.command()
@click.argument("name")
@tenant_option
@click.option(
    "--type", "type_", type=click.Choice(["twilio", "http"]), default="twilio", show_default=True,
    help="twilio: a Twilio account; http: any HTTP API (--base-url, --auth).",
)  # fmt: skip
@click.option("--account-sid", default=None, help="twilio: the Account SID (AC + 32 hex digits).")
@click.option("--api-key", default=None, help="twilio: an API Key SID (SK...); the secret is then the API Key Secret.")
@click.option("--base-url", default=None, help="http: the API's https:// base URL; requests go under it.")
@click.option("--auth", default=None, help=f"http: how the secret is sent: {', '.join(AUTH_SCHEMES)}.")
@click.option("--allow-method", "methods", multiple=True, help="http: a method snippets may use (repeat; default: "
              "GET, POST, PUT, PATCH, DELETE).")  # fmt: skip
@click.option("--allow-prefix", "prefixes", multiple=True, help="http: a path prefix snippets may call (repeat; "
              "default: /, everything under the base URL).")  # fmt: skip
@click.option("--local-test-target", is_flag=True, help="http: allow a loopback or private base URL (a local test "
              "API); never for a real one.")  # fmt: skip
@click.option("--token-url", default=None, help="http --auth oauth2: the OAuth 2 token endpoint.")
@click.option("--client-id", default=None, help="http --auth oauth2: the client id (the secret is the client secret).")
@click.option("--scope", default=None, help="http --auth oauth2: the scope to ask for.")
@click.option("--replace", is_flag=True, help="Overwrite an existing connection of the same name.")
@json_option
def add(
    name: str,
    tenant: str,
    type_: str,
    account_sid: str | None,
    api_key: str | None,
    base_url: str | None,
    auth: str | None,
    methods: tuple[str, ...],
    prefixes: tuple[str, ...],
    local_test_target: bool,
    token_url: str | None,
    client_id: str | None,
    scope: str | None,
    replace: bool,
    as_json: bool,
) -> None:
    """Save connection NAME; the secret is read from a hidden prompt or from stdin.

    Prints the connection's name on stdout (its masked summary as JSON with --json).

    \b
    Examples:
      printf '%s\\n' "$TWILIO_AUTH_TOKEN" | zingyconn connections add primary --account-sid AC...
      printf '%s\\n' "$CRM_TOKEN" | zingyconn connections add crm --type http \\
          --base-url https://api.crm.example/v1 --auth bearer --allow-prefix /contacts
    """
    profile: Profile
    if type_ == "http":
        if base_url is None or auth is None or account_sid or api_key:
            raise click.UsageError("--type http takes --base-url and --auth (not --account-sid or --api-key).")
        build = functools.partial(
            HttpProfile.from_options, base_url=base_url, auth=auth, methods=methods, prefixes=prefixes,
            local_test_target=local_test_target, token_url=token_url, client_id=client_id, scope=scope,
        )  # fmt: skip
        _check_before_secret(build(secret=""))
        what = {"basic": "Secret (user:password)", "oauth2": "Client secret"}.get(
            auth.strip(), "Secret (token or API key)"
        )
        store = _store()
        _refuse_existing(store, tenant, name, replace=replace)
        profile = build(secret=_read_secret(what))
    else:
        if account_sid is None or base_url or auth or methods or prefixes or local_test_target or token_url:
            raise click.UsageError("--type twilio takes --account-sid (and --api-key); the --base-url, --auth, "
                                   "--allow-* and --local-test-target options are for --type http.")  # fmt: skip
        what = "API Key Secret" if api_key else "Auth Token"
        twilio = TwilioProfile(account_sid=account_sid.strip(), api_key=api_key and api_key.strip(), secret="")
        _check_before_secret(twilio)
        store = _store()
        _refuse_existing(store, tenant, name, replace=replace)
        profile = TwilioProfile(account_sid=twilio.account_sid, api_key=twilio.api_key, secret=_read_secret(what))
    revision = store.put(tenant, name, profile)
    verb = "Saved" if revision == 1 else "Replaced"
    message = (
        f"{verb} connection {name!r} in tenant {tenant!r} (sealed with key {store.keyring.primary_key_id!r}).\n"
        f"Check the credentials with: zingyconn connections test {name} --tenant {tenant}"
    )
    document = _summary_json(store.describe(tenant, name)) if as_json else None
    echo_created(name, message, document=document, as_json=as_json)


def _check_before_secret(profile: Profile) -> None:
    """Report every mistake but the (still missing) secret before asking for the secret."""
    try:
        profile.validate()
    except InvalidConnectionError as exc:
        if exc.field != "secret":
            raise


def _refuse_existing(store: ConnectionStore, tenant: str, name: str, *, replace: bool) -> None:
    if replace:
        return
    try:
        store.describe(tenant, name)
    except ConnectionNotFoundError:
        return
    raise click.UsageError(f"Connection {name!r} already exists in tenant {tenant!r}; pass --replace.")


@connections.command(name="list")
@tenant_option
@json_option
def list_(tenant: str, as_json: bool) -> None:
    """List the tenant's connections (names, masked SIDs; never secrets)."""
    summaries = _store().list(tenant)
    if as_json:
        echo_json([_summary_json(summary) for summary in summaries])
        return
    if not summaries:
        click.echo(
            f"Tenant {tenant!r} has no connections; add one with: zingyconn connections add NAME --account-sid AC... "
            f"--tenant {tenant} (it reads the secret from stdin)",
            err=True,
        )
    width = max((len(summary.name) for summary in summaries), default=0)
    for summary in summaries:
        if summary.type != "twilio":
            click.echo(f"{summary.name:<{width}}  {summary.type}  updated {format_time(summary.updated_at)}")
            continue
        credential = f"api_key {summary.api_key}" if summary.api_key else "auth token"
        click.echo(
            f"{summary.name:<{width}}  {summary.type}  {summary.account_sid}  {credential:<18}  "
            f"updated {format_time(summary.updated_at)}"
        )


@connections.command()
@click.argument("name")
@tenant_option
@json_option
def show(name: str, tenant: str, as_json: bool) -> None:
    """Show connection NAME with its secret masked (decrypting it proves the key works)."""
    store = _store()
    summary: ConnectionSummary = store.describe(tenant, name)
    masked = store.get(tenant, name).masked()
    if as_json:
        echo_json({**_summary_json(summary), **masked})
        return
    if summary.type != "twilio":
        fields = [f"{key + ':':<12} {value}" for key, value in masked.items()]
        click.echo("\n".join([f"name:        {summary.name}", f"tenant:      {summary.tenant}",
                               f"type:        {summary.type}", *fields]))  # fmt: skip
        return
    lines = [
        f"name:        {summary.name}",
        f"tenant:      {summary.tenant}",
        f"type:        {summary.type}",
        f"account_sid: {masked['account_sid']}",
        f"api_key:     {masked['api_key'] or '(none: authenticates with the Auth Token)'}",
        f"secret:      {masked['secret']}",
        f"sealed with: key {summary.key_id!r} (revision {summary.revision})",
        f"created:     {format_time(summary.created_at)}",
        f"updated:     {format_time(summary.updated_at)}",
    ]
    click.echo("\n".join(lines))


@connections.command()
@click.argument("name")
@tenant_option
def delete(name: str, tenant: str) -> None:
    """Delete connection NAME."""
    _store().delete(tenant, name)
    click.echo(f"Deleted connection {name!r} from tenant {tenant!r}.", err=True)


@connections.command()
@click.argument("name")
@tenant_option
def test(name: str, tenant: str) -> None:
    """Make one authenticated read with NAME's credentials.

    Twilio: ZINGYCONN_TWILIO_BASE_URL if set, else Twilio. HTTP: a GET of the base URL's first allowed prefix.
    """
    settings = Settings.from_env()
    profile = ConnectionStore.from_settings(settings).get(tenant, name)
    answer = connection_type(profile.connection_type).check(
        profile, base_url=settings.twilio_base_url, what=f"connection {name!r}"
    )
    if profile.connection_type != "twilio":
        click.echo(f"OK: connection {name!r} answered from {answer}.")
        return
    click.echo(f"OK: connection {name!r} authenticated to {settings.twilio_base_url or 'Twilio'} as {answer}.")
