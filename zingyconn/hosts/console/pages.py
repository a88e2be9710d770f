"""Console page handlers: parse the form, call the runtime, render a template. No business logic lives here."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sandbox.errors import CompileError, SandboxError
from sandbox.limits import DEFAULT_LIMITS
from zingyconn.catalog import NAME_PATTERN, Catalog
from zingyconn.errors import NotFoundError, ValidationError, ZingyConnError
from zingyconn.hosts.console import auth
from zingyconn.hosts.console.outcome import Outcome, command_outcome, error_outcome, run_outcome
from zingyconn.runtime import Runtime
from zingyconn.twilio.profile import TwilioProfile

Handler = Callable[[Request], Awaitable[Response]]

#: Fields of each command's form, with the platform's input names (DESIGN §5).
COMMAND_FIELDS: Final[Mapping[str, tuple[tuple[str, str, str, str], ...]]] = {
    # (name, kind, help, placeholder)
    "sendMessage": (
        ("fromPhone", "text", "E.164, or use fromService", "+15005550006"),
        ("fromService", "text", "Messaging Service SID", "MG…"),
        ("toPhone", "text", "E.164", "+15558675310"),
        ("msg", "text", "up to 1600 characters", "Hello from zingyconn"),
        ("customProps", "json", "mediaUrl, statusCallback, sendAt, …", '{"statusCallback": "https://…"}'),
        ("idempotencyKey", "text", "optional: the same key within 24 h sends once", ""),
    ),
    "listMessages": (
        ("criteria", "json", "to, from, dateSent, dateSentBefore, dateSentAfter", '{"to": "+15558675310"}'),
        ("limit", "text", "1–1000, default 50", "20"),
    ),
    "readMessage": (("sid", "text", "SM/MM + 32 hex", "SM…"),),
    "updateMessage": (
        ("sid", "text", "SM/MM + 32 hex", "SM…"),
        ("customProps", "json", '{"body": ""} redacts, {"status": "canceled"} cancels', '{"body": ""}'),
    ),
    "deleteMessage": (("sid", "text", "SM/MM + 32 hex", "SM…"),),
}
RUN_STATUSES: Final = ("ok", "failed", "running", "retrying")
STARTER_SNIPPET: Final = (
    "from twilio.twiml.messaging_response import MessagingResponse\n\n"
    "body = (event.get(\"form\") or {}).get(\"Body\", \"\")\n"
    "log.info(\"inbound\", body=body)\n"
    "reply = MessagingResponse()\n"
    "reply.message(f\"You said: {body}\")\n"
    "return reply\n"
)


@dataclass(frozen=True, slots=True)
class ConsoleState:
    """What the console pages work with.

    Attributes:
        runtime: The production runtime (sandbox, store, broker, history).
        catalog: Hooks and scripts.
        enqueue: Puts a script on the task queue, ``(tenant, script, payload) -> task id``; ``None`` when this
            server runs without a queue.
    """

    runtime: Runtime
    catalog: Catalog
    enqueue: Callable[[str, str, Any], str] | None = None


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def _render(request: Request, template: str, context: dict[str, Any], *, status_code: int = 200) -> Response:
    principal = auth.current_principal(request)
    flashes = request.session.pop("flashes", [])
    base = {"principal": principal, "csrf": auth.csrf_token(request), "flashes": flashes, "tenant": None}
    response: Response = request.app.state.templates.TemplateResponse(
        request, f"console/{template}", {**base, **context}, status_code=status_code
    )
    return response


def _flash(request: Request, kind: str, text: str) -> None:
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
            principal = auth.current_principal(request)
            if principal is None:
                return _login_redirect(request)
            tenant = request.path_params.get("tenant")
            if tenant is not None and (not NAME_PATTERN.fullmatch(tenant) or not principal.may_see(tenant)):
                # The same answer for "no such tenant" and "not yours": nothing about other tenants leaks.
                return _render(request, "home.html", {"tenants": []}, status_code=404)
            form = FormData()
            if request.method == "POST":
                form = await request.form()
                if not auth.is_csrf_valid(request, str(form.get(auth.CSRF_FIELD) or "")):
                    return Response("CSRF token missing or wrong; reload the page and try again.", status_code=403)
            request.state.nav = nav
            return await handler(request, tenant, form)

        return wrapper

    return decorate


async def login(request: Request) -> Response:
    """Show the sign-in form, or sign in with a token."""
    next_url = request.query_params.get("next", "")
    error = None
    if request.method == "POST":
        form = await request.form()
        next_url = str(form.get("next") or "")
        if not auth.is_csrf_valid(request, str(form.get(auth.CSRF_FIELD) or "")):
            return Response("CSRF token missing or wrong; reload the page and try again.", status_code=403)
        principal = await run_in_threadpool(
            auth.authenticate,
            str(form.get("token") or ""),
            admin_token=request.app.state.admin_token,
            engine=_state(request).runtime.engine,
        )
        if principal is not None:
            auth.sign_in(request, principal)
            # Only same-console paths: an open redirect would turn the login page into a phishing relay.
            target = next_url if next_url.startswith("/console/") and "//" not in next_url else None
            if target is None and principal.tenant is not None:
                target = str(request.url_for("console_connections", tenant=principal.tenant))
            return RedirectResponse(target or str(request.url_for("console_home")), status_code=303)
        error = "That token is not valid. Use the operator token or one of a tenant's API tokens."
    return _render(request, "login.html", {"error": error, "next": next_url}, status_code=401 if error else 200)


async def logout(request: Request) -> Response:
    """Sign out (POST with the CSRF token, so another site cannot sign you out)."""
    form = await request.form()
    if auth.is_csrf_valid(request, str(form.get(auth.CSRF_FIELD) or "")):
        auth.sign_out(request)
    return RedirectResponse(str(request.url_for("console_login")), status_code=303)


@page()
async def home(request: Request, tenant: str | None, form: FormData) -> Response:
    """Pick a tenant (operator), or go to one's own tenant (tenant admin)."""
    principal = auth.current_principal(request)
    assert principal is not None
    if principal.tenant is not None:
        return RedirectResponse(str(request.url_for("console_connections", tenant=principal.tenant)), 303)
    tenants = await run_in_threadpool(_state(request).runtime.tenants)
    return _render(request, "home.html", {"tenants": tenants})


@page()
async def pick(request: Request, tenant: str | None, form: FormData) -> Response:
    """Open the tenant named in the query string."""
    chosen = request.query_params.get("tenant", "").strip()
    if not NAME_PATTERN.fullmatch(chosen):
        _flash(request, "error", "A tenant name is 1–100 letters, digits, '_', '.' or '-'.")
        return RedirectResponse(str(request.url_for("console_home")), 303)
    return RedirectResponse(str(request.url_for("console_connections", tenant=chosen)), 303)


# --- connections -------------------------------------------------------------------------------------------------


@page(nav="connections")
async def connections(request: Request, tenant: str, form: FormData) -> Response:
    """List the tenant's connections with an add/edit form (secrets are never rendered)."""
    return await _connections_page(request, tenant, {})


async def _connections_page(request: Request, tenant: str, values: Mapping[str, str], *, status: int = 200) -> Response:
    store = _state(request).runtime.store
    summaries = await run_in_threadpool(store.list, tenant)
    rows = [
        {
            "name": s.name,
            "type": s.type,
            "account_sid": s.account_sid,
            "api_key": s.api_key,
            "updated": _when(s.updated_at),
        }
        for s in summaries
    ]
    editing = None
    edit_name = request.query_params.get("edit") or values.get("existing_name")
    if edit_name:
        editing = {"name": edit_name}
        # Only the non-secret identifiers are pre-filled; they are shown in the list anyway, unmasked here
        # because the editor needs them to save the record again.
        profile = await run_in_threadpool(_get_profile, store, tenant, edit_name)
        if profile is not None and not values:
            values = {"account_sid": profile.account_sid, "api_key": profile.api_key or ""}
    context = {"tenant": tenant, "nav": "connections", "connections": rows, "editing": editing, "form": values}
    return _render(request, "connections.html", context, status_code=status)


def _get_profile(store: Any, tenant: str, name: str) -> TwilioProfile | None:
    try:
        profile: TwilioProfile = store.get(tenant, name)
    except ZingyConnError:
        return None
    return profile


@page(nav="connections")
async def connection_save(request: Request, tenant: str, form: FormData) -> Response:
    """Add or edit a connection; a blank secret on edit keeps the stored one."""
    store = _state(request).runtime.store
    name = str(form.get("name") or "").strip()
    values = {"account_sid": str(form.get("account_sid") or "").strip(), "api_key": str(form.get("api_key") or "").strip()}
    secret = str(form.get("secret") or "")
    try:
        if not secret and form.get("existing"):
            current = await run_in_threadpool(store.get, tenant, name)
            secret = current.secret
        profile = TwilioProfile(account_sid=values["account_sid"], api_key=values["api_key"] or None, secret=secret)
        await run_in_threadpool(store.put, tenant, name, profile)
    except ZingyConnError as exc:
        _flash(request, "error", str(exc))
        status = 400 if isinstance(exc, ValidationError) else 500
        return await _connections_page(request, tenant, {**values, "existing_name": name if form.get("existing") else ""},
                                       status=status)
    _flash(request, "ok", f"Saved connection {name!r}.")
    return RedirectResponse(str(request.url_for("console_connections", tenant=tenant)), 303)


@page(nav="connections")
async def connection_test(request: Request, tenant: str, form: FormData) -> Response:
    """Make one authenticated call with the connection and say whether Twilio accepted it."""
    name = request.path_params["name"]
    try:
        detail = await run_in_threadpool(_state(request).runtime.test_connection, tenant, name)
        _flash(request, "ok", f"Connection {name!r} works: {detail}")
    except ZingyConnError as exc:
        _flash(request, "error", f"Connection {name!r} failed its test: {exc}")
    return RedirectResponse(str(request.url_for("console_connections", tenant=tenant)), 303)


@page(nav="connections")
async def connection_delete(request: Request, tenant: str, form: FormData) -> Response:
    """Delete a connection."""
    name = request.path_params["name"]
    try:
        await run_in_threadpool(_state(request).runtime.store.delete, tenant, name)
        _flash(request, "ok", f"Deleted connection {name!r}.")
    except ZingyConnError as exc:
        _flash(request, "error", str(exc))
    return RedirectResponse(str(request.url_for("console_connections", tenant=tenant)), 303)


# --- commands ----------------------------------------------------------------------------------------------------


@page(nav="commands")
async def commands(request: Request, tenant: str, form: FormData) -> Response:
    """Run a connection command from a form with the platform's input names."""
    command = str(form.get("command") or request.query_params.get("command") or "sendMessage")
    if command not in COMMAND_FIELDS:
        command = "sendMessage"
    names = [s.name for s in await run_in_threadpool(_state(request).runtime.store.list, tenant)]
    values = {key: str(value) for key, value in form.items() if key != auth.CSRF_FIELD}
    outcome: Outcome | None = None
    if request.method == "POST":
        try:
            inputs = _command_inputs(command, values)
            output = await run_in_threadpool(
                _state(request).runtime.command, tenant, values.get("connection", ""), command, inputs
            )
            outcome = command_outcome(output)
        except (ZingyConnError, SandboxError) as exc:
            outcome = error_outcome(exc)
    fields = [{"name": n, "kind": k, "help": h, "placeholder": p} for n, k, h, p in COMMAND_FIELDS[command]]
    context = {"tenant": tenant, "nav": "commands", "commands": list(COMMAND_FIELDS), "command": command,
               "fields": fields, "connections": names, "form": values, "outcome": outcome}
    return _render(request, "commands.html", context)


def _command_inputs(command: str, values: Mapping[str, str]) -> dict[str, Any]:
    """Turn form strings into command inputs: JSON fields parsed, blanks left out, ``limit`` as a number."""
    inputs: dict[str, Any] = {}
    for name, kind, _help, _placeholder in COMMAND_FIELDS[command]:
        text = values.get(name, "").strip()
        if not text:
            continue
        if kind == "json":
            try:
                inputs[name] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{name} is not valid JSON: {exc.msg} (line {exc.lineno}).", field=name) from None
        elif name == "limit" and text.lstrip("-").isdigit():
            inputs[name] = int(text)
        else:
            inputs[name] = text
    return inputs


# --- runner ------------------------------------------------------------------------------------------------------


@page(nav="runner")
async def runner(request: Request, tenant: str, form: FormData) -> Response:
    """Edit and run a snippet in the production sandbox; open, save and replay hooks, scripts and runs."""
    state = _state(request)
    values = {"source": STARTER_SNIPPET, "event": "{}", "kind": "webhook", "save_kind": "hook", "save_name": "",
              "verify_with": "", "cron": ""}
    loaded = None
    if request.method == "GET":
        loaded = await run_in_threadpool(_load_into_runner, state, tenant, request.query_params, values)
    else:
        values.update({key: str(value) for key, value in form.items() if key in values})
    outcome: Outcome | None = None
    compile_errors: tuple[str, ...] = ()
    if request.method == "POST" and form.get("action") == "save":
        try:
            saved = await run_in_threadpool(_save_from_runner, state, tenant, values)
            _flash(request, "ok", saved)
            return RedirectResponse(str(request.url_for("console_runner", tenant=tenant))
                                    + f"?{values['save_kind']}={quote(values['save_name'])}", 303)
        except CompileError as exc:
            compile_errors = exc.errors
        except ZingyConnError as exc:
            _flash(request, "error", str(exc))
    elif request.method == "POST":
        outcome = await run_in_threadpool(_run_from_runner, state, tenant, values)
    error_line = outcome.error_line if outcome else _first_error_line(compile_errors)
    line_count = max(1, values["source"].count("\n") + 1)
    kinds = [(k, f"{lim.wall_seconds:g} s wall, {lim.memory_bytes // 2**20} MiB") for k, lim in DEFAULT_LIMITS.items()
             if k != "console"]
    context = {"tenant": tenant, "nav": "runner", "form": values, "outcome": outcome, "loaded": loaded,
               "compile_errors": compile_errors, "error_line": error_line, "line_numbers": range(1, line_count + 1),
               "kinds": kinds}
    return _render(request, "runner.html", context)


def _load_into_runner(state: ConsoleState, tenant: str, query: Mapping[str, str], values: dict[str, str]) -> str | None:
    try:
        if name := query.get("hook"):
            hook = state.catalog.get_hook(tenant, name)
            values.update(source=hook.source, kind="webhook", save_kind="hook", save_name=name,
                          verify_with=hook.verify_with or "")
            return f"hook {name!r}"
        if name := query.get("script"):
            script = state.catalog.get_script(tenant, name)
            values.update(source=script.source, kind="task", save_kind="script", save_name=name, cron=script.cron or "")
            return f"script {name!r}"
        if run_id := query.get("replay"):
            run = state.runtime.history.get(tenant, run_id)
            kind = run.kind if run.kind in ("webhook", "task") else "webhook"
            values.update(source=run.source or values["source"], kind=kind, event=json.dumps(run.event, indent=2),
                          save_kind="script" if kind == "task" else "hook", save_name=run.name or "")
            return f"run {run_id} ({run.kind}{' ' + run.name if run.name else ''}) for replay"
    except NotFoundError:
        return None
    return None


def _save_from_runner(state: ConsoleState, tenant: str, values: Mapping[str, str]) -> str:
    name = values["save_name"].strip()
    if not name:
        raise ValidationError("Give the hook or script a name before saving.", field="save_name")
    if values["save_kind"] == "script":
        state.catalog.put_script(tenant, name, values["source"], cron=values["cron"] or None)
        return f"Saved script {name!r}."
    state.catalog.put_hook(tenant, name, values["source"], verify_with=values["verify_with"].strip() or None)
    return f"Saved hook {name!r}: POST /hooks/{tenant}/{name}."


def _run_from_runner(state: ConsoleState, tenant: str, values: Mapping[str, str]) -> Outcome:
    try:
        event = json.loads(values["event"] or "null")
    except json.JSONDecodeError as exc:
        return error_outcome(ValidationError(f"event is not valid JSON: {exc.msg} (line {exc.lineno}).", field="event"))
    kind = values["kind"] if values["kind"] in ("webhook", "task") else "webhook"
    # The console's own kind, with the limits of the kind being tried (DESIGN §2: console = the kind tried).
    result = state.runtime.run(tenant, values["source"], event=event, kind="console",
                               limits=DEFAULT_LIMITS[kind], name=values["save_name"] or None)
    return run_outcome(result)


def _first_error_line(errors: tuple[str, ...]) -> int | None:
    for message in errors:
        if message.startswith("Line ") and (number := message[5:].split(":", 1)[0]).isdigit():
            return int(number)
    return None


# --- hooks, scripts, runs ----------------------------------------------------------------------------------------


@page(nav="hooks")
async def hooks(request: Request, tenant: str, form: FormData) -> Response:
    """List the tenant's webhook hooks."""
    items = await run_in_threadpool(_state(request).catalog.list_hooks, tenant)
    rows = [{"name": h.name, "extra": [f"/hooks/{tenant}/{h.name}", h.verify_with or "—"], "updated": _when(h.updated_at)}
            for h in items]
    return _render(request, "catalog.html", {
        "tenant": tenant, "nav": "hooks", "title": "Hooks", "items": rows, "item_kind": "hook",
        "extra_headers": ["URL", "Signature checked with"],
        "hint": "Each hook answers POST/GET on its URL and runs its snippet with the request as event.",
    })


@page(nav="scripts")
async def scripts(request: Request, tenant: str, form: FormData) -> Response:
    """List the tenant's background-task scripts."""
    items = await run_in_threadpool(_state(request).catalog.list_scripts, tenant)
    rows = [{"name": s.name, "extra": [s.cron or "—"], "updated": _when(s.updated_at)} for s in items]
    return _render(request, "catalog.html", {
        "tenant": tenant, "nav": "scripts", "title": "Scripts", "items": rows, "item_kind": "script",
        "extra_headers": ["Schedule"], "hint": "Scripts run as background tasks, on demand or on a cron schedule.",
    })


@page(nav="scripts")
async def script_enqueue(request: Request, tenant: str, form: FormData) -> Response:
    """Put a script on the task queue now, with an empty payload."""
    name = request.path_params["name"]
    state = _state(request)
    if state.enqueue is None:
        _flash(request, "error", "This server runs without a task queue; start a `zingyconn worker`-backed server.")
    else:
        try:
            task_id = await run_in_threadpool(state.enqueue, tenant, name, {})
            _flash(request, "ok", f"Enqueued script {name!r} as task {task_id}; see Run history.")
        except ZingyConnError as exc:
            _flash(request, "error", str(exc))
    return RedirectResponse(str(request.url_for("console_scripts", tenant=tenant)), 303)


@page()
async def catalog_delete(request: Request, tenant: str, form: FormData) -> Response:
    """Delete a hook or a script."""
    kind, name = request.path_params["item_kind"], request.path_params["name"]
    catalog = _state(request).catalog
    delete = {"hook": catalog.delete_hook, "script": catalog.delete_script}.get(kind)
    if delete is None:
        return Response("Unknown item kind.", status_code=404)
    try:
        await run_in_threadpool(delete, tenant, name)
        _flash(request, "ok", f"Deleted {kind} {name!r}.")
    except ZingyConnError as exc:
        _flash(request, "error", str(exc))
    return RedirectResponse(str(request.url_for(f"console_{kind}s", tenant=tenant)), 303)


@page(nav="runs")
async def runs(request: Request, tenant: str, form: FormData) -> Response:
    """List recent runs with filters on kind, status and name."""
    query = request.query_params
    filters = {key: query.get(key) or None for key in ("kind", "status", "name")}
    records = await run_in_threadpool(
        _state(request).runtime.history.list, tenant, kind=filters["kind"], status=filters["status"],
        name=filters["name"], limit=200,
    )
    rows = [{"id": r.id, "kind": r.kind, "name": r.name, "status": r.status, "duration_ms": r.duration_ms,
             "started": _when(r.started_at)} for r in records]
    return _render(request, "runs.html", {"tenant": tenant, "nav": "runs", "runs": rows, "filters": filters,
                                          "statuses": RUN_STATUSES})


@page(nav="runs")
async def run_detail(request: Request, tenant: str, form: FormData) -> Response:
    """Show one stored run (masked) with a button that replays it in the runner."""
    try:
        record = await run_in_threadpool(_state(request).runtime.history.get, tenant, request.path_params["run_id"])
    except NotFoundError:
        return _render(request, "home.html", {"tenants": []}, status_code=404)
    run = {"id": record.id, "kind": record.kind, "name": record.name, "status": record.status,
           "started": _when(record.started_at), "attempt": record.attempt, "replay_of": record.replay_of,
           "source": record.source, "event_json": json.dumps(record.event, indent=2)}
    return _render(request, "run.html", {"tenant": tenant, "nav": "runs", "run": run,
                                         "outcome": run_outcome(record)})


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "—"
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
