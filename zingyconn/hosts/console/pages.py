"""Console pages: sign-in, tenant choice, hooks, scripts and run history."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from zingyconn.catalog import Script
from zingyconn.errors import NotFoundError, ValidationError, ZingyConnError
from zingyconn.hosts.console import auth
from zingyconn.hosts.console.outcome import run_outcome
from zingyconn.hosts.console.view import (
    audit,
    client_address,
    flash,
    not_found,
    page,
    read_form,
    render,
    state_of,
    when,
)
from zingyconn.names import NAME_PATTERN
from zingyconn.secrets.tokens import TokenStore

RUN_STATUSES: Final = ("ok", "failed", "running", "retrying")
#: Runs per page of the run history.
RUNS_PER_PAGE: Final = 50
#: Next runs the scripts page shows per schedule.
NEXT_RUNS_SHOWN: Final = 3


async def login(request: Request) -> Response:
    """Show the sign-in form, or sign in with a token (throttled per client address and console-wide)."""
    next_url = request.query_params.get("next", "")
    error = None
    if request.method == "POST":
        state = state_of(request)
        client = client_address(request)
        retry_after = await run_in_threadpool(state.logins.admit, client)
        if retry_after is not None:
            message = f"Too many sign-in attempts from here or in total; try again in {retry_after} s."
            refused = render(request, "login.html", {"error": message, "next": ""}, status_code=429)
            refused.headers["Retry-After"] = str(retry_after)
            return refused
        form = await read_form(request)
        next_url = str(form.get("next") or "")
        if not auth.is_csrf_valid(request, str(form.get(auth.CSRF_FIELD) or "")):
            return Response("CSRF token missing or wrong; reload the page and try again.", status_code=403)
        token = str(form.get("token") or "").strip()
        principal = await run_in_threadpool(
            auth.authenticate, token, admin_token=request.app.state.admin_token, tokens=TokenStore(state.runtime.engine)
        )
        if principal is not None:
            session_id, session = await run_in_threadpool(
                lambda: state.sessions.start(tenant=principal.tenant, token=token)
            )
            auth.sign_in(request, session_id, session)
            await audit(request, "session.start", tenant=principal.tenant)
            # Only same-console paths: an open redirect would turn the login page into a phishing relay.
            target = next_url if next_url.startswith("/console/") and "//" not in next_url else None
            if target is None and principal.tenant is not None:
                target = str(request.url_for("console_connections", tenant=principal.tenant))
            return RedirectResponse(target or str(request.url_for("console_home")), status_code=303)
        await audit(request, "session.refused", tenant=None)
        error = "That token is not valid. Use the operator token or one of a tenant's API tokens."
    return render(request, "login.html", {"error": error, "next": next_url}, status_code=401 if error else 200)


async def logout(request: Request) -> Response:
    """Sign out (POST with the CSRF token, so another site cannot sign you out): the session ends server-side."""
    form = await read_form(request)
    if auth.is_csrf_valid(request, str(form.get(auth.CSRF_FIELD) or "")):
        state = state_of(request)
        principal = await auth.resume(request, state.sessions)
        session_id = auth.sign_out(request)
        if session_id is not None:
            await run_in_threadpool(state.sessions.end, session_id)
        if principal is not None:
            request.state.principal = principal  # the audit row names who signed out
            await audit(request, "session.end", tenant=principal.tenant)
            request.state.principal = None
    return RedirectResponse(str(request.url_for("console_login")), status_code=303)


@page()
async def home(request: Request, tenant: str | None, form: FormData) -> Response:
    """Pick a tenant (operator), or go to one's own tenant (tenant admin)."""
    principal = auth.current_principal(request)
    assert principal is not None
    if principal.tenant is not None:
        return RedirectResponse(str(request.url_for("console_connections", tenant=principal.tenant)), 303)
    tenants = await run_in_threadpool(state_of(request).runtime.tenants)
    return render(request, "home.html", {"tenants": tenants})


@page()
async def pick(request: Request, tenant: str | None, form: FormData) -> Response:
    """Open the tenant named in the query string."""
    chosen = request.query_params.get("tenant", "").strip()
    if not NAME_PATTERN.fullmatch(chosen):
        flash(request, "error", "A tenant name is 1–100 letters, digits, '_', '.' or '-'.")
        return RedirectResponse(str(request.url_for("console_home")), 303)
    return RedirectResponse(str(request.url_for("console_connections", tenant=chosen)), 303)


# --- hooks, scripts, runs ----------------------------------------------------------------------------------------


@page(nav="hooks")
async def hooks(request: Request, tenant: str, form: FormData) -> Response:
    """List the tenant's webhook hooks."""
    items = await run_in_threadpool(state_of(request).catalog.list_hooks, tenant)
    rows = [
        {
            "name": h.name,
            "extra": [f"/hooks/{tenant}/{h.name}", h.verify_with or "—"],
            "version": h.version,
            "updated": when(h.updated_at),
        }
        for h in items
    ]
    return render(
        request,
        "catalog.html",
        {
            "tenant": tenant,
            "nav": "hooks",
            "title": "Hooks",
            "items": rows,
            "item_kind": "hook",
            "extra_headers": ["URL", "Signature checked with"],
            "hint": "Each hook answers POST/GET on its URL and runs its snippet with the request as event.",
        },
    )


@page(nav="scripts")
async def scripts(request: Request, tenant: str, form: FormData) -> Response:
    """List the tenant's background-task scripts."""
    items = await run_in_threadpool(state_of(request).catalog.list_scripts, tenant)
    now = datetime.now(UTC)
    rows = [
        {
            "name": s.name,
            "extra": [f"{s.cron} ({s.timezone})" if s.cron else "—", _next_runs(s, now)],
            "version": s.version,
            "updated": when(s.updated_at),
        }
        for s in items
    ]
    return render(
        request,
        "catalog.html",
        {
            "tenant": tenant,
            "nav": "scripts",
            "title": "Scripts",
            "items": rows,
            "item_kind": "script",
            "extra_headers": ["Schedule", "Next runs"],
            "hint": "Scripts run as background tasks, on demand or on a cron schedule.",
        },
    )


def _next_runs(script: Script, now: datetime) -> str:
    """The next runs of *script*'s schedule in its zone (``—`` when it runs on demand only)."""
    try:
        schedule = script.schedule()
    except ValidationError as exc:  # a zone this machine's tz database no longer has
        return str(exc)
    if schedule is None:
        return "—"
    return " · ".join(run.strftime("%a %Y-%m-%d %H:%M %Z") for run in schedule.next_runs(now, NEXT_RUNS_SHOWN))


@page(nav="scripts")
async def script_enqueue(request: Request, tenant: str, form: FormData) -> Response:
    """Put a script on the task queue now, with an empty payload."""
    name = request.path_params["name"]
    state = state_of(request)
    if state.enqueue is None:
        flash(request, "error", "This server runs without a task queue; start a `zingyconn worker`-backed server.")
    else:
        try:
            task_id = await run_in_threadpool(state.enqueue, tenant, name, {})
            await audit(request, "script.enqueue", tenant=tenant, target=name, task_id=task_id)
            flash(request, "ok", f"Enqueued script {name!r} as task {task_id}; see Run history.")
        except ZingyConnError as exc:
            flash(request, "error", str(exc))
    return RedirectResponse(str(request.url_for("console_scripts", tenant=tenant)), 303)


@page()
async def catalog_delete(request: Request, tenant: str, form: FormData) -> Response:
    """Delete a hook or a script."""
    kind, name = request.path_params["item_kind"], request.path_params["name"]
    catalog = state_of(request).catalog
    delete = {"hook": catalog.delete_hook, "script": catalog.delete_script}.get(kind)
    if delete is None:
        return not_found(request, "Only hooks and scripts can be deleted here.", tenant=tenant)
    try:
        await run_in_threadpool(delete, tenant, name)
        await audit(request, f"{kind}.delete", tenant=tenant, target=name)
        flash(request, "ok", f"Deleted {kind} {name!r}.")
    except ZingyConnError as exc:
        flash(request, "error", str(exc))
    return RedirectResponse(str(request.url_for(f"console_{kind}s", tenant=tenant)), 303)


@page(nav="runs")
async def runs(request: Request, tenant: str, form: FormData) -> Response:
    """List runs newest first, a page at a time (keyset cursor), filtered by kind, status, name and error text."""
    query = request.query_params
    filters = {key: (query.get(key) or "").strip() or None for key in ("kind", "status", "name", "q")}
    after = _cursor(query.get("after"))
    records = await run_in_threadpool(
        lambda: state_of(request).runtime.history.list(
            tenant,
            kind=filters["kind"],
            status=filters["status"],
            name=filters["name"],
            error_text=filters["q"],
            after=after,
            limit=RUNS_PER_PAGE + 1,  # one more than shown: whether there is a next page
        )
    )
    more = len(records) > RUNS_PER_PAGE
    records = records[:RUNS_PER_PAGE]
    next_query = None
    if more:
        last = records[-1]
        kept = {key: value for key, value in filters.items() if value}
        next_query = urlencode({**kept, "after": f"{last.started_at!r}:{last.id}"})
    rows = [
        {
            "id": r.id,
            "kind": r.kind,
            "name": r.name,
            "status": r.status,
            "version": r.version,
            "duration_ms": r.duration_ms,
            "started": when(r.started_at),
        }
        for r in records
    ]
    return render(
        request,
        "runs.html",
        {
            "tenant": tenant,
            "nav": "runs",
            "runs": rows,
            "filters": filters,
            "statuses": RUN_STATUSES,
            "next_query": next_query,
            "paged": after is not None,
        },
    )


def _cursor(text: str | None) -> tuple[float, str] | None:
    """Parse a page cursor (``<started_at>:<run id>``); a malformed one starts from the newest run."""
    started, _, run_id = (text or "").partition(":")
    try:
        return (float(started), run_id) if run_id else None
    except ValueError:
        return None


@page(nav="runs")
async def run_detail(request: Request, tenant: str, form: FormData) -> Response:
    """Show one stored run (masked) with a button that replays it in the runner."""
    try:
        record = await run_in_threadpool(state_of(request).runtime.history.get, tenant, request.path_params["run_id"])
    except NotFoundError:
        return not_found(request, "No run with that id in this tenant's history.", tenant=tenant)
    run = {
        "id": record.id,
        "kind": record.kind,
        "name": record.name,
        "status": record.status,
        "started": when(record.started_at),
        "attempt": record.attempt,
        "replay_of": record.replay_of,
        "version": record.version,
        "source": record.source,
        "event_json": json.dumps(record.event, indent=2),
    }
    return render(request, "run.html", {"tenant": tenant, "nav": "runs", "run": run, "outcome": run_outcome(record)})


async def page_not_found(request: Request, exc: Exception) -> Response:
    """Answer an unknown console address with the console's 404 page (signed in: with the header's sign-out)."""
    await auth.resume(request, state_of(request).sessions)
    return not_found(request, f"The console has no page at {request.url.path}.")


@page(nav="audit")
async def audit_trail(request: Request, tenant: str, form: FormData) -> Response:
    """Show the tenant's audit trail: every change made through the console, newest first."""
    events = await run_in_threadpool(lambda: state_of(request).audit.list(tenant=tenant, limit=200))
    rows = [{**event.to_json(), "when": when(event.at)} for event in events]
    return render(request, "audit.html", {"tenant": tenant, "nav": "audit", "events": rows})
