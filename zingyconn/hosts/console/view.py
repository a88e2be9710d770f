"""What every console page shares: the state, the sign-in/tenant/CSRF wrapper, rendering and flash messages."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from zingyconn.catalog import Catalog
from zingyconn.egress.ratelimit import RateLimiter
from zingyconn.hosts.audit import AuditTrail
from zingyconn.hosts.console import auth
from zingyconn.hosts.console.compile_pool import CompilePool
from zingyconn.hosts.console.policy import NONCE_STATE_KEY
from zingyconn.hosts.console.sessions import SessionStore
from zingyconn.hosts.console.throttle import LoginThrottle
from zingyconn.hosts.middleware import read_body
from zingyconn.hosts.signature import PublicUrl
from zingyconn.names import NAME_PATTERN
from zingyconn.runtime import Runtime
from zingyconn.secrets.tokens import TokenStore
from zingyconn.tasks.store import TaskStore

Handler = Callable[[Request], Awaitable[Response]]

#: Largest console form: a snippet at the compiler's limit (256 KiB), percent-encoded, plus the other fields.
MAX_FORM_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ConsoleState:
    """What the console pages work with.

    Attributes:
        runtime: The production runtime (sandbox, store, broker, history).
        catalog: Hooks and scripts.
        sessions: Server-side sessions.
        audit: Where every change is recorded.
        logins: Sign-in throttle.
        limiter: Per-tenant token buckets of the console (runner compiles), shared by every server process.
        compiler: The process that compiles the runner's large snippets.
        enqueue: Puts a script on the task queue, ``(tenant, script, payload) -> task id``; ``None`` when this
            server runs without a queue.
        public_url: Which peers' ``X-Forwarded-For`` names the client (trusted proxies).
        tasks: The task rows (the Tasks page lists, cancels and re-queues them).
        tokens: Tenants' API tokens (the Tokens page).
    """

    runtime: Runtime
    catalog: Catalog
    sessions: SessionStore
    audit: AuditTrail
    logins: LoginThrottle
    limiter: RateLimiter
    compiler: CompilePool
    tasks: TaskStore
    tokens: TokenStore
    enqueue: Callable[[str, str, Any], str] | None = None
    public_url: PublicUrl = field(default_factory=PublicUrl)


def state_of(request: Request) -> ConsoleState:
    """Return the console state of the app serving *request*."""
    state: ConsoleState = request.app.state.console
    return state


def client_address(request: Request) -> str:
    """Return the client's address: the peer, or the address a trusted proxy says it forwarded for."""
    return state_of(request).public_url.client_address(request)


async def audit(request: Request, action: str, *, tenant: str | None, target: str | None = None, **detail: Any) -> None:
    """Record a change made through the console by whoever is signed in (names and ids only, never secrets)."""
    principal = auth.current_principal(request)
    actor = principal.actor if principal is not None else "anonymous"
    await run_in_threadpool(
        lambda: state_of(request).audit.record(
            actor=actor, action=action, tenant=tenant, target=target, client=client_address(request), detail=detail
        )
    )


def render(request: Request, template: str, context: dict[str, Any], *, status_code: int = 200) -> Response:
    principal = auth.current_principal(request)
    flashes = request.session.pop("flashes", [])
    base = {
        "principal": principal,
        "csrf": auth.csrf_token(request),
        "flashes": flashes,
        "tenant": None,
        "csp_nonce": getattr(request.state, NONCE_STATE_KEY, ""),
    }
    response: Response = request.app.state.templates.TemplateResponse(
        request, f"console/{template}", {**base, **context}, status_code=status_code
    )
    return response


def not_found(request: Request, message: str, *, tenant: str | None = None) -> Response:
    """Render the console's 404 page (inside its layout) saying what was not found and where to go instead."""
    return render(request, "not_found.html", {"message": message, "tenant": tenant}, status_code=404)


def flash(request: Request, kind: str, text: str) -> None:
    request.session.setdefault("flashes", []).append((kind, text))


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{request.url_for('console_login')}?next={quote(target)}", status_code=303)


def page(*, nav: str | None = None) -> Callable[[Callable[..., Awaitable[Response]]], Handler]:
    """Wrap a handler: sign-in required, tenant access checked, CSRF checked on POST, errors rendered.

    The wrapped handler gets ``(request, tenant, form)``; ``form`` is the parsed form on POST, else empty.
    """

    def decorate(handler: Callable[..., Awaitable[Response]]) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: Request) -> Response:
            principal = await auth.resume(request, state_of(request).sessions)
            if principal is None:
                return _login_redirect(request)
            tenant = request.path_params.get("tenant")
            if tenant is not None and (not NAME_PATTERN.fullmatch(tenant) or not principal.may_see(tenant)):
                # The same answer for "no such tenant" and "not yours": nothing about other tenants leaks.
                return not_found(request, "There is no tenant by that name that you may open; check the address.")
            form = FormData()
            if request.method == "POST":
                form = await read_form(request)
                if not auth.is_csrf_valid(request, str(form.get(auth.CSRF_FIELD) or "")):
                    return Response("CSRF token missing or wrong; reload the page and try again.", status_code=403)
            request.state.nav = nav
            return await handler(request, tenant, form)

        return wrapper

    return decorate


async def read_form(request: Request) -> FormData:
    """Read a console form (capped) and parse it in a worker thread, not on the event loop.

    Threat: a runner form carries a snippet of up to 256 KiB; parsing that on the loop (Starlette's form parser)
    stalls every other request for a fraction of a second each time. Console forms are URL-encoded; anything else
    parses as empty.
    """
    body = await read_body(request, max_bytes=MAX_FORM_BYTES)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded" or not body:
        return FormData()
    text = body.decode("utf-8", errors="replace")
    pairs = await run_in_threadpool(lambda: parse_qsl(text, keep_blank_values=True))
    return FormData([(name, value) for name, value in pairs])


def when(timestamp: float | None) -> str:
    if not timestamp:
        return "—"
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
