"""``zingyconn emulator``: serve the local Twilio emulator (Messages API 2010-04-01) with uvicorn."""

from __future__ import annotations

import click
import uvicorn

from zingyconn.errors import ConfigurationError
from zingyconn.hosts.cli.listening import bind_port
from zingyconn.twilio.emulator import (
    DEFAULT_ACCOUNT,
    DEFAULT_KEY,
    Account,
    ApiKey,
    EmulatorState,
    MessagingService,
    create_app,
    open_state_file,
    parse_service,
)


def _accounts(values: tuple[str, ...]) -> list[Account]:
    accounts = []
    for value in values:
        sid, colon, token = value.partition(":")
        if not colon:
            raise ConfigurationError(f"--account {value!r} is not SID:TOKEN.")
        try:
            accounts.append(Account(sid, token))
        except ValueError as exc:
            raise ConfigurationError(f"--account: {exc}") from None
    return accounts


def _api_keys(values: tuple[str, ...]) -> list[ApiKey]:
    keys = []
    for value in values:
        parts = value.split(":")
        if len(parts) != 3:  # SK:SECRET:ACCOUNT_SID
            raise ConfigurationError(f"--api-key {value!r} is not SK:SECRET:ACCOUNT_SID.")
        try:
            keys.append(ApiKey(*parts))
        except ValueError as exc:
            raise ConfigurationError(f"--api-key: {exc}") from None
    return keys


def _services(values: tuple[str, ...]) -> list[MessagingService]:
    services = []
    for value in values:
        try:
            services.append(parse_service(value))
        except ValueError as exc:
            raise ConfigurationError(f"--service: {exc}") from None
    return services


def build_state(
    accounts: tuple[str, ...], api_keys: tuple[str, ...], state_file: str | None, services: tuple[str, ...] = ()
) -> EmulatorState:
    """Return the state for the given options (default: the documented demo account and API key)."""
    account_list = _accounts(accounts) or [DEFAULT_ACCOUNT]
    key_list = _api_keys(api_keys) if (api_keys or accounts) else [DEFAULT_KEY]
    service_list = _services(services)
    persistence = open_state_file(state_file) if state_file else None
    try:
        return EmulatorState(account_list, key_list, persistence=persistence, services=service_list)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def banner(state: EmulatorState, base_url: str) -> str:
    """Return the text printed at start: the base URL, the credentials and a client snippet to copy."""
    lines = [f"Twilio emulator (Messages API 2010-04-01) on {base_url}", ""]
    for account in state.directory.accounts.values():
        lines.append(f"  account  {account.sid}  auth token {account.auth_token}")
    for key in state.directory.api_keys.values():
        lines.append(f"  api key  {key.sid}  secret {key.secret}  (account {key.account_sid})")
    for service in state.services.configured():
        lines.append(f"  service  {service.sid}  senders {', '.join(service.senders)}")
    first = next(iter(state.directory.accounts.values()))
    lines += [
        "",
        "Try it:",
        f"  curl -u {first.sid}:{first.auth_token} {base_url}/2010-04-01/Accounts/{first.sid}/Messages.json \\",
        "       --data-urlencode To=+15551234567 --data-urlencode From=+15005550006 --data-urlencode Body=Hello",
        f"  export ZINGYCONN_TWILIO_BASE_URL={base_url}",
    ]
    return "\n".join(lines)


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (keep it on loopback).")
@click.option("--port", default=8765, show_default=True, type=int, help="TCP port.")
@click.option("--account", "accounts", multiple=True, metavar="SID:TOKEN", help="An account (repeatable).")
@click.option("--api-key", "api_keys", multiple=True, metavar="SK:SECRET:SID", help="An API key of an account.")
@click.option("--state", "state_file", metavar="FILE", help="Keep messages in FILE (*.json, else SQLite).")
@click.option("--service", "services", multiple=True, metavar="MG…:NUMBER[,NUMBER…]",
              help="A Messaging Service and its sender pool (repeatable; others use +15005550006).")  # fmt: skip
def emulator(
    host: str,
    port: int,
    accounts: tuple[str, ...],
    api_keys: tuple[str, ...],
    state_file: str | None,
    services: tuple[str, ...],
) -> None:
    """Serve a local Twilio emulator: the Messages API as the real twilio library sees it.

    Without --account it serves the documented demo account and API key (see the README).
    """
    state = build_state(accounts, api_keys, state_file, services)
    with bind_port(host, port) as sock:  # before the banner: a busy port is one error line, nothing else
        click.echo(banner(state, f"http://{host}:{sock.getsockname()[1]}"))
        uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning")).run(sockets=[sock])
