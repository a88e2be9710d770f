"""``zingyconn serve``: the webhook host, command API, console and (by default) an in-process task consumer."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import click

from zingyconn.hosts.server import ENV_PUBLIC_URL, ENV_TRUSTED_PROXIES, LifespanHook

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.routing import BaseRoute

    from zingyconn.runtime import Runtime
    from zingyconn.tasks.queue import TaskQueue

#: Environment variable that tells ``--workers N`` processes not to start a task consumer each.
ENV_NO_TASKS = "ZINGYCONN_SERVE_NO_TASKS"
#: Environment variable that turns on the JSON access log in every worker process.
ENV_ACCESS_LOG = "ZINGYCONN_SERVE_ACCESS_LOG"


def task_queue(runtime: Runtime) -> TaskQueue:
    """Return the task queue this server enqueues to and (unless ``--no-tasks``) consumes from."""
    from zingyconn.tasks.queue import TaskQueue

    return TaskQueue.from_settings(runtime.settings, engine=runtime.engine, runner=runtime)


def default_lifespan_hooks(runtime: Runtime, *, queue: TaskQueue | None = None) -> list[LifespanHook]:
    """Return the start-up/shutdown hooks of ``serve``: the in-process task consumer unless it is disabled."""
    if os.environ.get(ENV_NO_TASKS) or queue is None:
        return []

    @contextlib.asynccontextmanager
    async def consume_tasks(app: Starlette) -> AsyncIterator[None]:
        queue.start()
        try:
            yield
        finally:
            queue.stop()

    return [consume_tasks]


def default_mounts(
    runtime: Runtime, *, admin_token: str | None, queue: TaskQueue | None = None, public_url: str | None = None
) -> list[BaseRoute]:
    """Return the extra mounts of ``serve``: the admin console at ``/console`` (Secure cookie behind https)."""
    from starlette.routing import Mount

    from zingyconn.catalog import Catalog
    from zingyconn.hosts.console import create_console
    from zingyconn.hosts.console.view import ConsoleState

    enqueue: Callable[[str, str, Any], str] | None = None
    if queue is not None:
        enqueue = lambda tenant, script, payload: queue.enqueue(tenant, script, payload, source="console").id  # noqa: E731
    https = bool(public_url and public_url.startswith("https://"))
    state = ConsoleState(runtime=runtime, catalog=Catalog(runtime.engine), enqueue=enqueue)
    # Unnamed: the console names its own routes ("console_login", ...) and resolves them through this mount.
    return [Mount("/console", app=create_console(state, admin_token=admin_token, https_only=https))]


def configure_logging() -> None:
    """Send our logs (the JSON access log among them) to stderr, one line each."""
    access = logging.getLogger("zingyconn.access")
    if access.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
