"""Console pages for connections (write-only secrets) and the connection-command runner.

Editing a connection pre-fills its form with the non-secret fields only; a stored secret is never sent back to the
browser. An HTTP connection's edit must carry the secret again (as a PUT of the admin API must): keeping the stored
one while the base URL changes would let whoever edits send it to a host of their choosing. A Twilio connection's
edit may keep it, since its calls only ever go to Twilio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sandbox.errors import SandboxError
from zingyconn.connection_types import Profile
from zingyconn.errors import ValidationError, ZingyConnError
from zingyconn.hosts.bodies import parse_json
from zingyconn.hosts.console import auth
from zingyconn.hosts.console.outcome import Outcome, command_outcome, error_outcome
from zingyconn.hosts.console.view import audit, flash, page, render, state_of, when
from zingyconn.http.profile import HttpProfile
from zingyconn.twilio.profile import TwilioProfile

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

#: The HTTP connection form's fields besides the name and the secret (OAuth 2's last, blank for other schemes).
HTTP_FORM_FIELDS: Final = ("base_url", "auth", "auth_name", "methods", "prefixes", "token_url", "client_id", "scope")

#: Commands that change nothing (not audited); every other command is.
READ_COMMANDS: Final = frozenset({"listMessages", "readMessage"})

# --- connections -------------------------------------------------------------------------------------------------


@page(nav="connections")
async def connections(request: Request, tenant: str, form: FormData) -> Response:
    """List the tenant's connections with an add/edit form (secrets are never rendered)."""
    return await _connections_page(request, tenant, {})


async def _connections_page(request: Request, tenant: str, values: Mapping[str, str], *, status: int = 200) -> Response:
    store = state_of(request).runtime.store
    summaries = await run_in_threadpool(store.list, tenant)
    rows = [
        {
            "name": s.name,
            "type": s.type,
            "account_sid": s.account_sid,
            "api_key": s.api_key,
            "details": await run_in_threadpool(_details, store, tenant, s.name) if s.type != "twilio" else "",
            "updated": when(s.updated_at),
        }
        for s in summaries
    ]
    editing = None
    edit_name = request.query_params.get("edit") or values.get("existing_name")
    if edit_name:
        profile = await run_in_threadpool(_get_profile, store, tenant, edit_name)
        editing = {"name": edit_name, "type": "http" if isinstance(profile, HttpProfile) else "twilio"}
        if profile is not None and not values:
            values = _prefilled(profile)
    context = {
        "tenant": tenant,
        "nav": "connections",
        "connections": rows,
        "editing": editing,
        "form": values,
    }
    return render(request, "connections.html", context, status_code=status)


def _details(store: Any, tenant: str, name: str) -> str:
    """An HTTP connection's row: its base URL, auth scheme, methods and prefixes (never the secret)."""
    try:
        profile = store.get(tenant, name)
    except ZingyConnError:
        return "(could not be opened)"
    if not isinstance(profile, HttpProfile):
        return ""
    masked = profile.masked()
    test_target = ", local test target" if profile.local_test_target else ""
    oauth2 = f" from {masked['token_url']} as {masked['client_id']}" if profile.auth == "oauth2" else ""
    return (
        f"{masked['base_url']} ({masked['auth']}{oauth2}; {masked['allowed_methods']} under "
        f"{masked['allowed_prefixes']}{test_target})"
    )


def _get_profile(store: Any, tenant: str, name: str) -> Profile | None:
    try:
        profile: Profile = store.get(tenant, name)
    except ZingyConnError:
        return None
    return profile


def _prefilled(profile: Profile) -> dict[str, str]:
    """The edit form's values of *profile*: its non-secret fields only (shown in the list anyway, unmasked here
    because the editor needs them to save the record again); never the secret."""
    if isinstance(profile, HttpProfile):
        scheme, _, auth_name = profile.auth.partition(":")
        fields = {
            "base_url": profile.base_url,
            "auth": scheme,
            "auth_name": auth_name,
            "methods": ", ".join(profile.allowed_methods),
            "prefixes": ", ".join(profile.allowed_prefixes),
            "token_url": profile.token_url or "",
            "client_id": profile.client_id or "",
            "scope": profile.scope or "",
            "local_test_target": "1" if profile.local_test_target else "",
        }
        return {f"http_{key}": value for key, value in fields.items()}
    if isinstance(profile, TwilioProfile):
        return {"account_sid": profile.account_sid, "api_key": profile.api_key or ""}
    return {}


@page(nav="connections")
async def connection_save(request: Request, tenant: str, form: FormData) -> Response:
    """Add or edit a connection; a blank secret on edit keeps the stored one."""
    store = state_of(request).runtime.store
    name = str(form.get("name") or "").strip()
    values = {
        "account_sid": str(form.get("account_sid") or "").strip(),
        "api_key": str(form.get("api_key") or "").strip(),
    }
    secret = str(form.get("secret") or "")
    try:
        if not secret and form.get("existing"):
            current = await run_in_threadpool(store.get, tenant, name)
            secret = current.secret if isinstance(current, TwilioProfile) else ""  # the form edits Twilio's
        profile = TwilioProfile(account_sid=values["account_sid"], api_key=values["api_key"] or None, secret=secret)
        await run_in_threadpool(store.put, tenant, name, profile)
    except ZingyConnError as exc:
        flash(request, "error", str(exc))
        status = 400 if isinstance(exc, ValidationError) else 500
        return await _connections_page(
            request, tenant, {**values, "existing_name": name if form.get("existing") else ""}, status=status
        )
    await audit(request, "connection.save", tenant=tenant, target=name, edited=bool(form.get("existing")))
    flash(request, "ok", f"Saved connection {name!r}.")
    return RedirectResponse(str(request.url_for("console_connections", tenant=tenant)), 303)


@page(nav="connections")
async def http_connection_save(request: Request, tenant: str, form: FormData) -> Response:
    """Add or edit an HTTP connection (base URL, auth scheme, allowed methods and prefixes, write-only secret; for
    OAuth 2 client credentials the token URL, client id and scope, the secret being the client secret). An edit
    must carry the secret again: the stored one is never kept (see the module's docstring)."""
    store = state_of(request).runtime.store
    name = str(form.get("name") or "").strip()
    values = {key: str(form.get(key) or "").strip() for key in HTTP_FORM_FIELDS}
    values["local_test_target"] = "1" if form.get("local_test_target") == "1" else ""
    named = values["auth"] in ("header", "query")  # the schemes whose header or query key the form names apart
    scheme = f"{values['auth']}:{values['auth_name']}" if named else values["auth"]
    secret = str(form.get("secret") or "")
    editing = bool(form.get("existing"))
    try:
        if editing and not secret:
            raise ValidationError(
                f"secret is required to save connection {name!r}: the stored one is not kept when an HTTP "
                "connection is edited (it could be sent to a changed base URL); enter it again.",
                field="secret",
            )
        profile = HttpProfile.from_options(
            base_url=values["base_url"],
            auth=scheme,
            secret=secret,
            methods=[values["methods"]],
            prefixes=[values["prefixes"]],
            local_test_target=values["local_test_target"] == "1",
            token_url=values["token_url"],
            client_id=values["client_id"],
            scope=values["scope"],
        )
        revision = await run_in_threadpool(store.put, tenant, name, profile)
    except ZingyConnError as exc:
        flash(request, "error", str(exc))
        status = 400 if isinstance(exc, ValidationError) else 500
        shown = {f"http_{key}": value for key, value in values.items()}
        return await _connections_page(request, tenant, {**shown, "http_name": name,
                                       "existing_name": name if editing else ""}, status=status)  # fmt: skip
    await audit(request, "connection.save", tenant=tenant, target=name, type="http", edited=revision > 1)
    flash(request, "ok", f"Saved HTTP connection {name!r}.")
    return RedirectResponse(str(request.url_for("console_connections", tenant=tenant)), 303)


@page(nav="connections")
async def connection_test(request: Request, tenant: str, form: FormData) -> Response:
    """Make one authenticated call with the connection and say whether the API accepted it."""
    name = request.path_params["name"]
    try:
        detail = await run_in_threadpool(state_of(request).runtime.test_connection, tenant, name)
        flash(request, "ok", f"Connection {name!r} works: {detail}")
    except (ZingyConnError, SandboxError) as exc:
        flash(request, "error", f"Connection {name!r} failed its test: {exc}")
    return RedirectResponse(str(request.url_for("console_connections", tenant=tenant)), 303)


@page(nav="connections")
async def connection_delete(request: Request, tenant: str, form: FormData) -> Response:
    """Delete a connection."""
    name = request.path_params["name"]
    try:
        await run_in_threadpool(state_of(request).runtime.store.delete, tenant, name)
        await audit(request, "connection.delete", tenant=tenant, target=name)
        flash(request, "ok", f"Deleted connection {name!r}.")
    except ZingyConnError as exc:
        flash(request, "error", str(exc))
    return RedirectResponse(str(request.url_for("console_connections", tenant=tenant)), 303)


def _actor(request: Request) -> str:
    """Who the run history names as the runner of a console command: the operator or a tenant's admin."""
    principal = auth.current_principal(request)
    return "console:operator" if principal is None or principal.tenant is None else "console:tenant-admin"


# --- commands ----------------------------------------------------------------------------------------------------


@page(nav="commands")
async def commands(request: Request, tenant: str, form: FormData) -> Response:
    """Run a connection command from a form with the platform's input names."""
    command = str(form.get("command") or request.query_params.get("command") or "sendMessage")
    if command not in COMMAND_FIELDS:
        command = "sendMessage"
    names = [s.name for s in await run_in_threadpool(state_of(request).runtime.store.list, tenant)]
    values = {key: str(value) for key, value in form.items() if key != auth.CSRF_FIELD}
    outcome: Outcome | None = None
    if request.method == "POST":
        connection = values.get("connection", "")
        try:
            inputs = _command_inputs(command, values)
            runtime, actor = state_of(request).runtime, _actor(request)
            output = await run_in_threadpool(lambda: runtime.command(tenant, connection, command, inputs, actor=actor))
            outcome = command_outcome(output)
        except (ZingyConnError, SandboxError) as exc:
            outcome = error_outcome(exc)
        if command not in READ_COMMANDS:
            await audit(request, "command.run", tenant=tenant, target=connection, command=command, ok=outcome.ok)
    fields = [{"name": n, "kind": k, "help": h, "placeholder": p} for n, k, h, p in COMMAND_FIELDS[command]]
    context = {
        "tenant": tenant,
        "nav": "commands",
        "commands": list(COMMAND_FIELDS),
        "command": command,
        "fields": fields,
        "connections": names,
        "form": values,
        "outcome": outcome,
    }
    return render(request, "commands.html", context)


def _command_inputs(command: str, values: Mapping[str, str]) -> dict[str, Any]:
    """Turn form strings into command inputs: JSON fields parsed, blanks left out, ``limit`` as a number."""
    inputs: dict[str, Any] = {}
    for name, kind, _help, _placeholder in COMMAND_FIELDS[command]:
        text = values.get(name, "").strip()
        if not text:
            continue
        if kind == "json":
            inputs[name] = parse_json(text, field=name)
        elif name == "limit" and text.lstrip("-").isdigit():
            inputs[name] = int(text)
        else:
            inputs[name] = text
    return inputs
