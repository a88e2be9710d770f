"""``zingyconn serve``: the webhook host, command API, console and (by default) an in-process task consumer."""

from __future__ import annotations

import os

import click

from zingyconn.hosts.composition import ENV_ACCESS_LOG, ENV_NO_TASKS
from zingyconn.hosts.server import ENV_PUBLIC_URL, ENV_TRUSTED_PROXIES


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 for all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--public-url", default=None, help="Base URL Twilio calls (https://hooks.example.com); it is signed.")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, help="Proxy IP/network whose X-Forwarded-* count.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--no-tasks", is_flag=True, help="Do not run background tasks in this server (use `zingyconn worker`).")
@click.option("--no-access-log", is_flag=True, help="Do not print the JSON access log.")
def serve(
    host: str,
    port: int,
    public_url: str | None,
    trusted_proxies: tuple[str, ...],
    workers: int,
    no_tasks: bool,
    no_access_log: bool,
) -> None:
    """Serve webhooks (/hooks/TENANT/HOOK), the command API (/api/v1), the console (/console) and /healthz.

    Signatures are checked against --public-url when it is set (recommended behind a proxy); otherwise against
    the URL of the request, with X-Forwarded-Proto/Host believed only from --trusted-proxy addresses.
    """
    import uvicorn

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
    click.echo(f"zingyconn serve: http://{host}:{port}/ ({workers} worker(s), tasks {'off' if no_tasks else 'on'})")
    uvicorn.run(
        "zingyconn.hosts.server:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # We read X-Forwarded-* ourselves, and only from --trusted-proxy peers; uvicorn's own handling would
        # otherwise believe them from 127.0.0.1 by default.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level="warning",
    )
