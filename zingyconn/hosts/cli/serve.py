"""``zingyconn serve``: the webhook host, command API, console and (by default) an in-process task consumer."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

import click

from zingyconn.hosts.cli.listening import bind_port
from zingyconn.hosts.composition import ENV_ACCESS_LOG, ENV_NO_TASKS
from zingyconn.hosts.server import ENV_CONSOLE_PORT, ENV_PUBLIC_URL, ENV_TRUSTED_PROXIES

if TYPE_CHECKING:
    import socket


#: The uvicorn settings of every ``zingyconn serve`` server (benchmarks serve their variants with the same ones).
UVICORN_SETTINGS: Final[dict[str, Any]] = {
    # We read X-Forwarded-* ourselves, and only from --trusted-proxy peers; uvicorn's own handling would otherwise
    # believe them from 127.0.0.1 by default.
    "proxy_headers": False,
    "server_header": False,
    "access_log": False,
    "log_level": "warning",
    "log_config": None,  # uvicorn's records join our one log stream instead of its own handlers
}


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 for all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--public-url", default=None, help="Base URL Twilio calls (https://hooks.example.com); it is signed.")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, help="Proxy IP/network whose X-Forwarded-* count.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--no-tasks", is_flag=True, help="Do not run background tasks in this server (use `zingyconn worker`).")
@click.option("--no-access-log", is_flag=True, help="Do not print the JSON access log.")
@click.option("--console-host", default=None, help="Interface of the console's own listener (default: --host).")
@click.option("--console-port", default=None, type=click.IntRange(1, 65535),
              help="Serve /console on this port only (its own origin), not beside the hooks.")  # fmt: skip
def serve(
    host: str,
    port: int,
    public_url: str | None,
    trusted_proxies: tuple[str, ...],
    workers: int,
    no_tasks: bool,
    no_access_log: bool,
    console_host: str | None,
    console_port: int | None,
) -> None:
    """Serve webhooks (/hooks/TENANT/HOOK), the command API (/api/v1), the console (/console) and /healthz.

    Signatures are checked against --public-url when it is set (recommended behind a proxy); otherwise against
    the URL of the request, with X-Forwarded-Proto/Host believed only from --trusted-proxy addresses.

    With --console-port the console answers only on that port and the hooks only on --port: two origins, so a
    page a tenant's hook returns can never share the console's cookies or storage (recommended; see the docs).
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from zingyconn.hosts.signature import PublicUrl

    try:
        PublicUrl(public_url, trusted_proxies)  # fail now, not in every worker, on a bad --trusted-proxy
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--trusted-proxy") from None
    if public_url and not public_url.startswith(("http://", "https://")):
        raise click.BadParameter("must start with http:// or https://", param_hint="--public-url")
    os.environ[ENV_ACCESS_LOG] = "" if no_access_log else "1"
    os.environ[ENV_PUBLIC_URL] = public_url or ""
    os.environ[ENV_TRUSTED_PROXIES] = ",".join(trusted_proxies)
    os.environ[ENV_NO_TASKS] = "1" if no_tasks else ""
    if console_port is not None and (console_host or host, console_port) == (host, port):
        raise click.BadParameter(
            "must differ from --host/--port (the console needs its own origin)", param_hint="--console-port"
        )
    os.environ[ENV_CONSOLE_PORT] = "" if console_port is None else str(console_port)
    sockets = [_listen(host, port, option="--port")]
    if console_port is not None:
        sockets.append(_listen(console_host or host, console_port, option="--console-port"))
    console = "" if console_port is None else f", console on http://{console_host or host}:{console_port}/console/"
    click.echo(
        f"zingyconn serve: http://{host}:{port}/ ({workers} worker(s), tasks {'off' if no_tasks else 'on'}{console})"
    )
    config = uvicorn.Config(
        "zingyconn.hosts.server:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        **UVICORN_SETTINGS,
    )
    try:
        if workers > 1:
            Multiprocess(config, sockets=sockets).run()
        else:
            uvicorn.Server(config).run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()


def _listen(host: str, port: int, *, option: str) -> socket.socket:
    """Bind a listening socket now, so a taken port is one clear error before any worker starts."""
    sock = bind_port(host, port, option=option)  # a taken port: PortInUseError, one `Error:` line, exit 3
    sock.listen(2048)  # --workers N: the worker processes accept on it (bind_port made it inheritable)
    return sock
