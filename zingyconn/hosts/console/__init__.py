"""The admin test console (``/console``): server-rendered pages that drive the production runtime.

Everything the console runs goes through the same :class:`~zingyconn.runtime.Runtime` as webhooks and tasks: the
same sandbox, limits, masking and run history. Pages are Jinja2 templates with no JavaScript framework; forms post
back and the server renders the outcome, so the console works (and is tested) without client-side code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from zingyconn.catalog import Catalog
from zingyconn.egress.ratelimit import SqlRateLimiter
from zingyconn.hosts.audit import AuditTrail
from zingyconn.hosts.console import connections, live, pages, runner, tasks, tokens, variables, versions
from zingyconn.hosts.console.auth import session_secret
from zingyconn.hosts.console.compile_pool import CompilePool
from zingyconn.hosts.console.policy import ConsolePolicyMiddleware
from zingyconn.hosts.console.sessions import SessionPolicy, SessionStore
from zingyconn.hosts.console.throttle import LoginRates, LoginThrottle
from zingyconn.hosts.console.view import ConsoleState
from zingyconn.hosts.signature import PublicUrl
from zingyconn.secrets.tokens import TokenStore
from zingyconn.tasks.store import TaskStore

if TYPE_CHECKING:
    from zingyconn.runtime import Runtime

HOSTS_DIR: Final = Path(__file__).resolve().parent.parent


def console_state(
    runtime: Runtime,
    *,
    admin_token: str | None,
    enqueue: Callable[[str, str, Any], str] | None = None,
    trusted_proxies: Iterable[str] = (),
    clock: Callable[[], float] = time.time,
) -> ConsoleState:
    """Build what the console works with from *runtime* and its settings (timeouts, sign-in rates)."""
    settings, engine = runtime.settings, runtime.engine
    policy = SessionPolicy(idle_seconds=settings.session_idle_seconds, absolute_seconds=settings.session_max_seconds)
    rates = LoginRates(
        per_client_per_minute=settings.logins_per_minute_per_client, total_per_minute=settings.logins_per_minute
    )
    limiter = SqlRateLimiter(engine, clock=clock)
    return ConsoleState(
        runtime=runtime,
        catalog=Catalog(engine),
        sessions=SessionStore(engine, admin_token=admin_token, policy=policy, clock=clock),
        audit=AuditTrail(engine, clock=clock),
        logins=LoginThrottle(limiter, rates),
        limiter=limiter,
        compiler=CompilePool(),
        enqueue=enqueue,
        public_url=PublicUrl(None, trusted_proxies),
        tasks=TaskStore(engine, clock=clock),
        tokens=TokenStore(engine, clock=clock),
    )


def create_console(state: ConsoleState, *, admin_token: str | None, https_only: bool = False) -> Starlette:
    """Return the console as an ASGI app, to be mounted at ``/console``.

    Args:
        state: The runtime and stores the pages use.
        admin_token: The operator token; ``None`` leaves only tenant-token sign-in.
        https_only: Mark the session cookie ``Secure`` (set when the public URL is https).
    """
    templates = Jinja2Templates(directory=str(HOSTS_DIR / "templates"))
    routes = [
        Route("/", pages.home, name="console_home"),
        Route("/login", pages.login, methods=["GET", "POST"], name="console_login"),
        Route("/logout", pages.logout, methods=["POST"], name="console_logout"),
        Route("/pick", pages.pick, name="console_pick"),
        Route("/t/{tenant}/connections", connections.connections, name="console_connections"),
        Route(
            "/t/{tenant}/connections/save",
            connections.connection_save,
            methods=["POST"],
            name="console_connection_save",
        ),
        Route(
            "/t/{tenant}/connections/http/save",
            connections.http_connection_save,
            methods=["POST"],
            name="console_http_connection_save",
        ),
        Route(
            "/t/{tenant}/connections/{name}/test",
            connections.connection_test,
            methods=["POST"],
            name="console_connection_test",
        ),
        Route(
            "/t/{tenant}/connections/{name}/delete",
            connections.connection_delete,
            methods=["POST"],
            name="console_connection_delete",
        ),
        Route("/t/{tenant}/vars", variables.variables, name="console_vars"),
        Route("/t/{tenant}/vars/save", variables.variable_save, methods=["POST"], name="console_var_save"),
        Route("/t/{tenant}/vars/{name}/delete", variables.variable_delete, methods=["POST"], name="console_var_delete"),
        Route("/t/{tenant}/commands", connections.commands, methods=["GET", "POST"], name="console_commands"),
        Route("/t/{tenant}/runner", runner.runner, methods=["GET", "POST"], name="console_runner"),
        Route("/t/{tenant}/runner/run", runner.run_in_place, methods=["POST"], name="console_run_in_place"),
        Route("/t/{tenant}/hooks", pages.hooks, name="console_hooks"),
        Route("/t/{tenant}/scripts", pages.scripts, name="console_scripts"),
        Route(
            "/t/{tenant}/scripts/{name}/enqueue", pages.script_enqueue, methods=["POST"], name="console_script_enqueue"
        ),
        Route(
            "/t/{tenant}/{item_kind:str}/{name}/delete",
            pages.catalog_delete,
            methods=["POST"],
            name="console_catalog_delete",
        ),
        Route("/t/{tenant}/{item_kind:str}/{name}/versions", versions.versions, name="console_versions"),
        Route(
            "/t/{tenant}/{item_kind:str}/{name}/rollback",
            versions.rollback,
            methods=["POST"],
            name="console_rollback",
        ),
        Route("/t/{tenant}/tasks", tasks.tasks, name="console_tasks"),
        Route("/t/{tenant}/tasks/{task_id}", tasks.task_action, methods=["POST"], name="console_task_action"),
        Route("/t/{tenant}/tokens", tokens.tokens, name="console_tokens"),
        Route("/t/{tenant}/tokens/new", tokens.token_create, methods=["POST"], name="console_token_create"),
        Route(
            "/t/{tenant}/tokens/{token_id}/revoke", tokens.token_revoke, methods=["POST"], name="console_token_revoke"
        ),
        Route("/t/{tenant}/runs", pages.runs, name="console_runs"),
        Route("/t/{tenant}/runs/live", live.live, name="console_live"),
        Route("/t/{tenant}/runs/live/events", live.events, name="console_live_events"),
        Route("/t/{tenant}/audit", pages.audit_trail, name="console_audit"),
        Route("/t/{tenant}/runs/{run_id}", pages.run_detail, name="console_run"),
        Mount("/static", app=StaticFiles(directory=str(HOSTS_DIR / "static")), name="console_static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: pages.page_not_found},
        middleware=[
            Middleware(ConsolePolicyMiddleware),
            Middleware(
                SessionMiddleware,
                secret_key=session_secret(admin_token),
                session_cookie="zingyconn_console",
                # The cookie may outlive the session; the server-side session decides (state.sessions.policy).
                max_age=int(state.sessions.policy.absolute_seconds),
                path="/console",
                same_site="strict",
                https_only=https_only,
            ),
        ],
    )
    app.state.console = state
    app.state.templates = templates
    app.state.admin_token = admin_token
    return app
