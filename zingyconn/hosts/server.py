"""The ASGI application behind ``zingyconn serve``: webhooks, the JSON API, ``/healthz``, and composition points.

Composition points, so other hosts plug in without editing this module:

- ``lifespan_hooks``: callables ``(app) -> async context manager`` entered at start-up and exited at shutdown, in
  order (the in-process task consumer is one).
- ``mounts``: extra routes or mounts (the admin console at ``/console`` is one); they share the error shape, the
  body cap and the access log, and can reach the shared :class:`~zingyconn.hosts.state.HostState` as
  ``request.app.state.host`` (their own ``app.state`` when they are a mounted sub-app).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Final

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.errors import SandboxError
from zingyconn.catalog import Catalog
from zingyconn.errors import ZingyConnError
from zingyconn.hosts import api, composition, tenant_api, webhooks
from zingyconn.hosts.audit import AuditTrail
from zingyconn.hosts.composition import LifespanHook
from zingyconn.hosts.middleware import (
    DEFAULT_MAX_BODY_BYTES,
    EdgeMiddleware,
    OriginSplitMiddleware,
    TenantLimiter,
    error_response,
    exception_response,
)
from zingyconn.hosts.replay import ReplayStore
from zingyconn.hosts.signature import PublicUrl
from zingyconn.hosts.state import HostState
from zingyconn.secrets.tokens import TokenStore

if TYPE_CHECKING:
    from zingyconn.runtime import Runtime

#: Environment variables through which ``zingyconn serve --workers N`` hands its options to each worker process.
ENV_PUBLIC_URL: Final = "ZINGYCONN_PUBLIC_URL"
ENV_TRUSTED_PROXIES: Final = "ZINGYCONN_TRUSTED_PROXIES"
ENV_CONSOLE_PORT: Final = "ZINGYCONN_CONSOLE_PORT"


async def healthz(request: Request) -> Response:
    """Answer liveness probes (no database or sandbox call: cheap enough to poll every second)."""
    return JSONResponse({"ok": True})


#: What ``/`` answers: a page saying what this server is and where to go (no data, so nothing to protect).
ROOT_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zingyconn</title></head>
<body>
<h1>zingyconn</h1>
<p>This server runs tenants' snippets as Twilio webhooks (<code>/hooks/TENANT/NAME</code>) and tasks.</p>
<ul>
{console}<li><a href="/healthz">/healthz</a>: liveness</li>
<li>The command API: <code>POST /api/v1/connections/NAME/commands/COMMAND</code> with a tenant token</li>
</ul>
<p>Documentation: the zingyconn docs (<code>docs/</code> in the source; <code>zingyconn --help</code> lists the
commands).</p>
</body></html>
"""
_CONSOLE_LINK: Final = '<li><a href="/console/">/console/</a>: the admin console</li>\n'


def root_page(*, has_console: bool) -> Route:
    """Return the route of ``/``: a small HTML page linking the console (when mounted here) and ``/healthz``."""
    body = ROOT_PAGE.format(console=_CONSOLE_LINK if has_console else "")

    async def root(request: Request) -> Response:
        return HTMLResponse(body)

    return Route("/", root, name="root")


async def _zingy_error(request: Request, exc: Exception) -> Response:
    return exception_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "NotFoundError", 405: "MethodNotAllowedError"}.get(exc.status_code, "HTTPError")
    return error_response(kind, str(exc.detail), status=exc.status_code, headers=exc.headers)


def create_app(
    runtime: Runtime,
    *,
    public_url: str | None = None,
    trusted_proxies: Iterable[str] = (),
    admin_token: str | None = None,
    lifespan_hooks: Sequence[LifespanHook] = (),
    mounts: Sequence[BaseRoute] = (),
    tenant_concurrency: int = 16,
    tenant_backlog: int = 256,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    close_runtime: bool = False,
    console_port: int | None = None,
) -> Starlette:
    """Build the server app around *runtime*.

    Args:
        runtime: Sandbox, store, broker and run history (its database also holds hooks, tokens and replays).
        public_url: The externally visible base URL (``https://hooks.example.com``); Twilio signs that URL.
        trusted_proxies: Peers (IPs or networks) whose ``X-Forwarded-Proto``/``X-Forwarded-Host`` are believed.
        admin_token: Bearer token of the admin API (``None`` disables it); defaults to nothing, not to the env.
        lifespan_hooks: Entered at start-up, exited at shutdown (e.g. the in-process task consumer).
        mounts: Extra routes/mounts (e.g. ``Mount("/console", ...)``).
        tenant_concurrency: Requests of one tenant that run at once in this process.
        tenant_backlog: Requests of one tenant that may wait for a slot before 429.
        max_body_bytes: Request body cap (413 beyond).
        close_runtime: Close *runtime* at shutdown (the server built it).
        console_port: The port the console listens on, apart from the hooks (``None``: beside them).
    """
    engine = runtime.engine
    state = HostState(
        runtime=runtime,
        catalog=Catalog(engine),
        replay=ReplayStore(engine, writer=runtime.writer),
        tokens=TokenStore(engine),
        audit=AuditTrail(engine),
        public_url=PublicUrl(public_url, trusted_proxies),
        limiter=TenantLimiter(running=tenant_concurrency, waiting=tenant_backlog),
        admin_token=admin_token,
        max_body_bytes=max_body_bytes,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if close_runtime:
                stack.callback(runtime.close)
            # Start the sandbox zygote now, so the first webhook does not pay its start-up (~1 s).
            await anyio.to_thread.run_sync(lambda: runtime.sandbox)
            for hook in lifespan_hooks:
                await stack.enter_async_context(hook(app))
            yield

    has_console = any(getattr(mount, "path", None) == "/console" for mount in mounts) and console_port is None
    routes: list[BaseRoute] = [
        root_page(has_console=has_console),
        Route("/healthz", healthz, name="healthz"),
        *webhooks.ROUTES,
        *api.ROUTES,
        *tenant_api.ROUTES,
        *mounts,
    ]
    middleware = [Middleware(EdgeMiddleware, max_body_bytes=max_body_bytes)]
    if console_port is not None:
        middleware.append(Middleware(OriginSplitMiddleware, console_port=console_port))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            ZingyConnError: _zingy_error,
            SandboxError: _zingy_error,
            HTTPException: _http_error,
        },
        lifespan=lifespan,
    )
    app.state.host = state
    return app


def create_app_from_env() -> Starlette:
    """Build the app from the environment: the factory ``zingyconn serve`` gives uvicorn (and each of its workers)."""
    from zingyconn.runtime import Runtime  # heavy: imported only when a server starts

    composition.configure_logging()  # every worker process: one log stream; the access log if `serve` asked
    runtime = Runtime.from_env()
    queue = composition.task_queue(runtime)
    admin_token = runtime.settings.admin_token
    public_url = os.environ.get(ENV_PUBLIC_URL) or None
    console_port = os.environ.get(ENV_CONSOLE_PORT) or None
    trusted_proxies = [p for p in os.environ.get(ENV_TRUSTED_PROXIES, "").split(",") if p.strip()]
    mounts = composition.default_mounts(
        runtime, admin_token=admin_token, queue=queue, public_url=public_url, trusted_proxies=trusted_proxies
    )
    return create_app(
        runtime,
        public_url=public_url,
        trusted_proxies=trusted_proxies,
        admin_token=admin_token,
        lifespan_hooks=composition.default_lifespan_hooks(runtime, queue=queue),
        mounts=mounts,
        close_runtime=True,
        console_port=None if console_port is None else int(console_port),
    )
