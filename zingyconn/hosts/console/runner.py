"""The console's snippet runner: edit, run in the production sandbox, save as hook or script, replay runs."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from sandbox.errors import CompileError
from zingyconn.egress.ratelimit import Rate
from zingyconn.errors import NotFoundError, TenantBusyError, ValidationError, ZingyConnError
from zingyconn.hosts.bodies import parse_json
from zingyconn.hosts.console.outcome import Outcome, error_outcome, run_outcome
from zingyconn.hosts.console.versions import author_of
from zingyconn.hosts.console.view import ConsoleState, audit, flash, page, render, state_of
from zingyconn.kinds import DEFAULT_LIMITS

#: Runs and saves (each compiles a snippet) one tenant may make in the runner per minute, shared by every server
#: process. Threat: one tenant keeping the compile pool (and the sandbox) busy with distinct large snippets.
COMPILES_PER_MINUTE: Final = 30
COMPILE_RATE: Final = Rate(per_second=COMPILES_PER_MINUTE / 60, burst=COMPILES_PER_MINUTE)
COMPILE_BUCKET: Final = "console-compile"

STARTER_SNIPPET: Final = (
    "from twilio.twiml.messaging_response import MessagingResponse\n\n"
    'body = (event.get("form") or {}).get("Body", "")\n'
    'log.info("inbound", body=body)\n'
    "reply = MessagingResponse()\n"
    'reply.message(f"You said: {body}")\n'
    "return reply\n"
)


# --- runner ------------------------------------------------------------------------------------------------------


#: Events to start from, offered by the runner's "Sample event" menu (the shapes docs/snippets.md describes).
SAMPLE_EVENTS: Final[dict[str, Any]] = {
    "Inbound SMS (webhook)": {
        "method": "POST",
        "path": "/hooks/acme/sms",
        "query": {},
        "headers": {"content-type": "application/x-www-form-urlencoded"},
        "form": {
            "MessageSid": "SM00000000000000000000000000000000",
            "AccountSid": "AC00000000000000000000000000000000",
            "From": "+15558675310",
            "To": "+15005550006",
            "Body": "Hello",
            "NumMedia": "0",
        },
        "json": None,
        "body": "",
    },
    "Status callback (webhook)": {
        "method": "POST",
        "path": "/hooks/acme/status",
        "query": {},
        "headers": {"content-type": "application/x-www-form-urlencoded"},
        "form": {
            "MessageSid": "SM00000000000000000000000000000000",
            "MessageStatus": "delivered",
            "From": "+15005550006",
            "To": "+15558675310",
            "ErrorCode": "",
        },
        "json": None,
        "body": "",
    },
    "Scheduled tick (task)": {"scheduled_for": "2026-01-05T08:00Z", "cron": "0 8 * * *", "timezone": "UTC"},
    "Empty": {},
}


def _form_values(request: Request, form: FormData) -> dict[str, str]:
    values = {
        "source": STARTER_SNIPPET,
        "event": "{}",
        "kind": "webhook",
        "save_kind": "hook",
        "save_name": "",
        "verify_with": "",
        "cron": "",
        "timezone": "",
        "isolation": "run",
        "wall_seconds": "",
        "replay_of": "",
        "message": "",
    }
    if request.method == "POST":
        values.update({key: str(value) for key, value in form.items() if key in values})
    return values


def _throttled(tenant: str, retry_after: int) -> str:
    return (
        f"Tenant {tenant!r} ran or saved more than {COMPILES_PER_MINUTE} snippets in the last minute; "
        f"try again in {retry_after} s."
    )


async def _run(request: Request, state: ConsoleState, tenant: str, values: Mapping[str, str]) -> Outcome:
    await state.compiler.precompile(values["source"])
    outcome = await run_in_threadpool(_run_from_runner, state, tenant, values)
    await audit(request, "snippet.run", tenant=tenant, target=values["save_name"] or None, run_id=outcome.run_id)
    return outcome


@page(nav="runner")
async def runner(request: Request, tenant: str, form: FormData) -> Response:
    """Edit and run a snippet in the production sandbox; open, save and replay hooks, scripts and runs."""
    state = state_of(request)
    values = _form_values(request, form)
    loaded = None
    if request.method == "GET":
        loaded = await run_in_threadpool(_load_into_runner, state, tenant, request.query_params, values)
    outcome: Outcome | None = None
    compile_errors: tuple[str, ...] = ()
    compile_error_line: int | None = None
    status = 200
    if request.method == "POST" and (retry_after := await _take_compile(state, tenant)) is not None:
        flash(request, "error", _throttled(tenant, retry_after))
        status = 429
    elif request.method == "POST" and form.get("action") == "save":
        try:
            await state.compiler.precompile(values["source"])
            saved = await run_in_threadpool(_save_from_runner, state, tenant, values, author_of(request))
            kind = "script" if values["save_kind"] == "script" else "hook"
            await audit(request, f"{kind}.save", tenant=tenant, target=values["save_name"].strip())
            flash(request, "ok", saved)
            return RedirectResponse(
                str(request.url_for("console_runner", tenant=tenant))
                + f"?{values['save_kind']}={quote(values['save_name'])}",
                303,
            )
        except CompileError as exc:
            compile_errors, compile_error_line = exc.errors, exc.lineno
        except ZingyConnError as exc:
            flash(request, "error", str(exc))
    elif request.method == "POST":
        outcome = await _run(request, state, tenant, values)
    error_line = outcome.error_line if outcome else compile_error_line
    line_count = max(1, values["source"].count("\n") + 1)
    kinds = [
        (k, f"{lim.wall_seconds:g} s wall, {lim.memory_bytes // 2**20} MiB")
        for k, lim in DEFAULT_LIMITS.items()
        if k != "console"
    ]
    context = {
        "tenant": tenant,
        "nav": "runner",
        "form": values,
        "outcome": outcome,
        "loaded": loaded,
        "compile_errors": compile_errors,
        "error_line": error_line,
        "line_numbers": range(1, line_count + 1),
        "kinds": kinds,
        "samples": {label: json.dumps(event, indent=2) for label, event in SAMPLE_EVENTS.items()},
    }
    return render(request, "runner.html", context, status_code=status)


@page(nav="runner")
async def run_in_place(request: Request, tenant: str, form: FormData) -> Response:
    """Run the runner's form and answer the outcome as JSON, for the page's Run without a reload.

    The same sign-in, tenant, CSRF and per-tenant compile rate as the form's Run, and the same run: a refused
    request answers as the page would (redirect to sign-in, 403, 404), which the page's script answers by posting
    the form the ordinary way.
    """
    state = state_of(request)
    values = _form_values(request, form)
    if (retry_after := await _take_compile(state, tenant)) is not None:
        error = {"type": "RateLimitedError", "message": _throttled(tenant, retry_after)}
        return JSONResponse({"ok": False, "error": error}, status_code=429, headers={"Retry-After": str(retry_after)})
    outcome = await _run(request, state, tenant, values)
    answer = outcome.to_json()
    if outcome.run_id:
        answer["run_url"] = str(request.url_for("console_run", tenant=tenant, run_id=outcome.run_id))
    return JSONResponse(answer)


async def _take_compile(state: ConsoleState, tenant: str) -> int | None:
    """Take one of *tenant*'s runner compiles; return ``None`` when allowed, else the seconds to wait."""
    allowed = await run_in_threadpool(state.limiter.acquire, tenant, COMPILE_BUCKET, COMPILE_RATE)
    return None if allowed else math.ceil(1 / COMPILE_RATE.per_second)


def _load_into_runner(state: ConsoleState, tenant: str, query: Mapping[str, str], values: dict[str, str]) -> str | None:
    try:
        if name := query.get("hook"):
            hook = state.catalog.get_hook(tenant, name)
            values.update(
                source=hook.source, kind="webhook", save_kind="hook", save_name=name,
                verify_with=hook.verify_with or "", isolation=hook.isolation,
            )  # fmt: skip
            return f"hook {name!r}"
        if name := query.get("script"):
            script = state.catalog.get_script(tenant, name)
            values.update(
                source=script.source,
                kind="task",
                save_kind="script",
                save_name=name,
                cron=script.cron or "",
                timezone=script.timezone,
                isolation=script.isolation,
            )
            return f"script {name!r}"
        if run_id := query.get("replay"):
            run = state.runtime.history.get(tenant, run_id)
            kind = run.kind if run.kind in ("webhook", "task") else "webhook"
            values.update(
                source=run.source or values["source"],
                kind=kind,
                event=json.dumps(run.event, indent=2),
                save_kind="script" if kind == "task" else "hook",
                save_name=run.name or "",
                replay_of=run.id,
            )
            return f"run {run_id} ({run.kind}{' ' + run.name if run.name else ''}) for replay"
    except NotFoundError:
        return None
    return None


def _save_from_runner(state: ConsoleState, tenant: str, values: Mapping[str, str], author: str) -> str:
    name = values["save_name"].strip()
    if not name:
        raise ValidationError("Give the hook or script a name before saving.", field="save_name")
    if values["save_kind"] == "script":
        script = state.catalog.put_script(
            tenant, name, values["source"], cron=values["cron"] or None, timezone=values["timezone"] or None,
            author=author, message=values["message"], isolation=values["isolation"] or None,
        )  # fmt: skip
        return f"Saved script {name!r} as version {script.version}."
    verify_with = values["verify_with"].strip() or None
    hook = state.catalog.put_hook(
        tenant, name, values["source"], verify_with=verify_with, author=author, message=values["message"],
        isolation=values["isolation"] or None,
    )  # fmt: skip
    return f"Saved hook {name!r} as version {hook.version}: POST /hooks/{tenant}/{name}."


def _run_from_runner(state: ConsoleState, tenant: str, values: Mapping[str, str]) -> Outcome:
    try:
        event = parse_json(values["event"] or "null", field="event")
    except ValidationError as exc:
        return error_outcome(exc)
    kind = values["kind"] if values["kind"] in ("webhook", "task") else "webhook"
    # The console's own kind, with the limits of the kind being tried (docs/console.md).
    limits = DEFAULT_LIMITS[kind]
    if wall := values.get("wall_seconds", "").strip():
        try:
            seconds = float(wall)
        except ValueError:
            seconds = 0.0
        if not 0 < seconds <= limits.wall_seconds:
            message = f"wall_seconds must be a number above 0 and at most the {kind} limit, {limits.wall_seconds:g}."
            return error_outcome(ValidationError(message, field="wall_seconds"))
        # Only ever lower: the console must not grant more than production would.
        limits = limits.replace(wall_seconds=seconds, cpu_seconds=min(limits.cpu_seconds, seconds))
    try:
        result = state.runtime.run(
            tenant,
            values["source"],
            event=event,
            kind="console",
            limits=limits,
            name=values["save_name"] or None,
            replay_of=values.get("replay_of") or None,
        )
    except TenantBusyError as exc:  # nothing ran: say so on the page, as for a bad event
        return error_outcome(exc)
    return run_outcome(result)
