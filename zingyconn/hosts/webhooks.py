"""``POST|GET /hooks/{tenant}/{hook}``: run a tenant's snippet with the HTTP request as ``event``.

Order of work for one request: ``HEAD`` is refused (405: it never runs a hook) → find the hook (404) → read the body
(capped: :data:`SIGNED_MAX_BODY_BYTES` for a hook that checks signatures) → in a worker thread, parse it, check the
Twilio signature when the hook names a validation connection (403, nothing run) and build the event (a body nested
too deeply or holding invalid Unicode is a 400, recorded as a failed run) → take a per-tenant slot (429 when full)
→ claim the ``I-Twilio-Idempotency-Token`` (a duplicate replays the first response) → run in the sandbox → render
→ store.

Responses: a dict/list/number/bool becomes JSON; a string that is a TwiML document (what a TwiML object turns into;
see :func:`zingyconn.hosts.content.is_twiml`) becomes ``text/xml``; any other string ``text/plain``; ``None``
becomes an empty TwiML ``<Response/>`` for Twilio requests (signed ones, or hooks with a validation connection)
and ``204`` otherwise.
A snippet error is ``500`` and a time limit ``504``, both as the JSON error shape with the run id and without any
traceback (the snippet's own traceback is in the run history, not in a response anyone can read).

The run history keeps the event once: a form or JSON post without its raw ``body`` (:func:`stored_event`).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.errors import SandboxError, TimeLimitExceededError
from sandbox.result import RunError
from zingyconn.catalog import Hook
from zingyconn.errors import ConnectionNotFoundError, DecryptionError, ValidationError
from zingyconn.history import FAILED, new_run_id
from zingyconn.hosts.bodies import parse_json
from zingyconn.hosts.content import media_type_of
from zingyconn.hosts.middleware import TooManyRequestsError, read_body
from zingyconn.hosts.replay import MAX_TOKEN_LENGTH, StoredResponse
from zingyconn.hosts.signature import (
    FORM_CONTENT_TYPE,
    FormParams,
    SignatureError,
    auth_token_of,
    parse_form,
    verify,
)
from zingyconn.hosts.state import HostState, host_state
from zingyconn.leases import LEASE_SECONDS
from zingyconn.tasks.retry import is_transient

if TYPE_CHECKING:
    from zingyconn.runtime import Runtime
    from zingyconn.secrets.store import ConnectionStore

IDEMPOTENCY_HEADER: Final = "i-twilio-idempotency-token"
RUN_ID_HEADER: Final = "X-Zingy-Run-Id"
REPLAYED_HEADER: Final = "X-Zingy-Replayed"
EMPTY_TWIML: Final = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'

#: Request headers a snippet never sees, and that are never stored in the run history: credentials a caller may
#: send (a proxy's Basic auth, a browser's cookies), and the signature, which a snippet has no use for.
HIDDEN_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie", "x-twilio-signature"})

#: How much longer than the hook's wall limit a duplicate waits for the first request's response.
DUPLICATE_WAIT_SLACK_SECONDS: Final = 5.0

#: Body cap of a hook that checks Twilio signatures. Twilio's largest webhook is an inbound message: at most 1,600
#: characters (6.4 KB of UTF-8, 19.2 KB percent-encoded) plus about 40 other fields and up to 10 ``MediaUrl``s;
#: 64 KiB fits that three times over and keeps the signature check (which parses the whole form) small.
SIGNED_MAX_BODY_BYTES: Final = 64 * 1024


async def handle_hook(request: Request) -> Response:
    """Run the hook named in the path and answer with its result."""
    state = host_state(request)
    tenant, name = request.path_params["tenant"], request.path_params["hook"]
    request.state.tenant, request.state.hook = tenant, name
    if request.method == "HEAD":
        # Starlette answers HEAD wherever GET is routed; a link checker's HEAD must not run (and bill) the snippet.
        raise HTTPException(405, "HEAD does not run hooks; send GET or POST.", headers={"Allow": "GET, POST"})
    # From the catalog's cache on the loop (no query); a worker thread reads it when the cache cannot answer.
    hook = state.catalog.known_hook(tenant, name)
    if hook is None:
        hook = await state.in_thread(state.catalog.cached_hook, tenant, name)
    max_bytes = state.max_body_bytes if hook.verify_with is None else min(state.max_body_bytes, SIGNED_MAX_BODY_BYTES)
    body = await read_body(request, max_bytes=max_bytes)
    token = request.headers.get(IDEMPOTENCY_HEADER)
    if token is not None and not 0 < len(token) <= MAX_TOKEN_LENGTH:
        message = f"The {IDEMPOTENCY_HEADER} header must be 1-{MAX_TOKEN_LENGTH} characters."
        raise ValidationError(message, field=IDEMPOTENCY_HEADER)
    url = state.public_url.url_for(request) if hook.verify_with is not None else ""
    is_twilio = hook.verify_with is not None or "x-twilio-signature" in request.headers
    async with state.limiter.slot(tenant):
        # One worker-thread call does the rest (parse, verify, claim, run, store): one thread hop per request.
        served = await state.in_thread(_serve, state, hook, url, request, body, token, is_twilio)
        if isinstance(served, StoredResponse):
            stored, replayed = served, False
        else:  # another request holds the token: replay its response, or take the claim over once it is dead
            assert token is not None
            stored, replayed = await _run_once(state, hook, served, token=token, is_twilio=is_twilio)
    request.state.run_id, request.state.replayed = stored.run_id, replayed
    return _respond(stored, replayed=replayed)


def _serve(
    state: HostState, hook: Hook, url: str, request: Request, body: bytes, token: str | None, is_twilio: bool
) -> StoredResponse | dict[str, Any]:
    """Parse, verify, claim the token, run and store, in one worker thread; never on the event loop.

    Returns the response to send, or the event when another request holds *token* (the caller then waits for it).

    Raises:
        SignatureError: The hook checks signatures and this request's does not hold (nothing runs).
    """
    try:
        with state.parse_slots:
            event = _prepare(state.runtime, hook, url, request, body)
    except ValidationError as exc:
        return _record_refusal(state.runtime, hook, request, exc)
    if token is not None and not state.replay.claim(hook.tenant, hook.name, token):
        return event
    return _run_claimed(state, hook, event, token, is_twilio)


def _prepare(runtime: Runtime, hook: Hook, url: str, request: Request, body: bytes) -> dict[str, Any]:
    """Parse the body, check the signature, build the event: in a worker thread, never on the event loop.

    Raises:
        SignatureError: The hook checks signatures and this request's does not hold (nothing runs).
        ValidationError: The body is not acceptable (see :mod:`zingyconn.hosts.bodies`).
    """
    form = parse_form(body) if _media_type(request) == FORM_CONTENT_TYPE else None
    if hook.verify_with is not None:
        _check_signature(runtime, hook, url, request, body, form)
    return build_event(request, hook=hook.name, body=body, form=form)


def _record_refusal(runtime: Runtime, hook: Hook, request: Request, error: ValidationError) -> StoredResponse:
    """Store a refused request as a failed run of the hook (its tenant sees why), and return the 400 to send."""
    run_id = new_run_id()
    details = {**error.to_json(), "run_id": run_id}
    runtime.history.record(
        run_id=run_id,
        tenant=hook.tenant,
        kind="webhook",
        name=hook.name,
        status=FAILED,
        started_at=time.time(),
        duration_ms=0.0,
        event=_request_fields(request, hook=hook.name),  # without the body: it is what was refused
        error=error.to_json(),
        source=hook.source,
        version=hook.version,
    )
    return StoredResponse(error.http_status, "application/json", _dumps({"ok": False, "error": details}), run_id)


async def _run_once(
    state: HostState, hook: Hook, event: dict[str, Any], *, token: str, is_twilio: bool
) -> tuple[StoredResponse, bool]:
    """Wait for the request that holds *token*: replay its response, or run once its claim is ours; (response,
    replayed)."""
    wall = hook.run_limits().wall_seconds
    give_up = time.monotonic() + wall + DUPLICATE_WAIT_SLACK_SECONDS
    while True:
        # Another request runs this token: replay its response, or take the claim over once its lease runs out
        # (its process died), so that this retry runs the hook instead of failing.
        remaining = give_up - time.monotonic()
        if remaining <= 0:
            raise TooManyRequestsError("A request with this idempotency token is still running; retry later.")
        wait_seconds = min(remaining, LEASE_SECONDS / 2)
        first = await state.replay.wait(hook.tenant, hook.name, token, timeout_seconds=wait_seconds)
        if first is not None:
            return first, True
        if await state.in_thread(state.replay.claim, hook.tenant, hook.name, token):
            return await state.in_thread(_run_claimed, state, hook, event, token, is_twilio), False


def _run_claimed(
    state: HostState, hook: Hook, event: dict[str, Any], token: str | None, is_twilio: bool
) -> StoredResponse:
    """Run the hook whose *token* (if any) this request claimed, then store its response for replay, or release."""
    if token is None:
        return _run(state.runtime, hook, event, None, is_twilio)[0]
    try:
        # The run's history row and its replay record commit in one transaction: never one without the other.
        with state.runtime.writer.together():
            stored, transient = _run(state.runtime, hook, event, token, is_twilio)
            if not transient:
                state.replay.store(hook.tenant, hook.name, token, stored)
    except BaseException:
        state.replay.release(hook.tenant, hook.name, token)
        raise
    if transient:
        # Our failure or Twilio's, not the snippet's (a crashed sandbox child, the store or Twilio unreachable): let
        # Twilio's retry run the hook again instead of replaying the failure. Its sends are in the send ledger.
        state.replay.release(hook.tenant, hook.name, token)
    return stored


def _respond(stored: StoredResponse, *, replayed: bool) -> Response:
    headers = {RUN_ID_HEADER: stored.run_id or ""}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return Response(stored.body, status_code=stored.status_code, media_type=stored.media_type or None, headers=headers)


def _check_signature(
    runtime: Runtime, hook: Hook, url: str, request: Request, body: bytes, form: FormParams | None
) -> None:
    assert hook.verify_with is not None
    verify(url=url, headers=request.headers, body=body, form=form, secrets=signing_secrets(runtime, hook))


def signing_secrets(runtime: Runtime, hook: Hook) -> tuple[str, ...]:
    """Return the secrets that may have signed requests to *hook*: its validation connection's Auth Token.

    Raises:
        SignatureError: The connection does not exist or holds no Auth Token (see :func:`auth_token_of`).
    """
    assert hook.verify_with is not None
    # From the store's cache: a rotated Auth Token or a deleted connection applies within the change counter's
    # staleness bound (zingyconn.changes), as for the runs themselves.
    try:
        try:
            profile = runtime.store.profiles(hook.tenant, cached=True)[hook.verify_with]
        except DecryptionError:  # another connection of the tenant does not open: read this one alone
            profile = runtime.store.get(hook.tenant, hook.verify_with)
    except (KeyError, ConnectionNotFoundError):
        raise SignatureError(
            f"Hook {hook.name!r} verifies signatures with connection {hook.verify_with!r}, which does not exist."
        ) from None
    return (auth_token_of(profile, connection=hook.verify_with),)


def check_verifier(store: ConnectionStore, tenant: str, connection: str) -> None:
    """Refuse at save time, not at the first webhook, a validation connection that is missing or has no Auth Token.

    Raises:
        ValidationError: The tenant has no such connection, or it uses an API key and holds no Auth Token
            (``field="verify_with"``).
    """
    try:
        profile = store.get(tenant, connection)
    except ConnectionNotFoundError:
        raise ValidationError(
            f"Tenant {tenant!r} has no connection {connection!r}; add it first with "
            f"`zingyconn connections add {connection} --account-sid AC... --tenant {tenant}`.",
            field="verify_with",
        ) from None
    try:
        auth_token_of(profile, connection=connection)
    except SignatureError as exc:
        raise ValidationError(str(exc), field="verify_with") from None


def build_event(request: Request, *, hook: str, body: bytes, form: FormParams | None) -> dict[str, Any]:
    """Return the ``event`` a hook's snippet gets: method, path, query, headers, form, json and the raw body.

    Repeated query or form fields keep every value as a list; single ones are plain strings.

    Raises:
        ValidationError: A JSON body nested too deeply or holding invalid Unicode (see :mod:`zingyconn.hosts.bodies`).
    """
    return {
        **_request_fields(request, hook=hook),
        "form": None if form is None else _flatten(form),
        "json": _json_body(request, body),
        "body": body.decode("utf-8", errors="replace"),
    }


def _request_fields(request: Request, *, hook: str) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        if key not in HIDDEN_HEADERS:
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    query: dict[str, list[str]] = {}
    if request.scope.get("query_string"):  # most webhooks have none: no parse, no multi-dict
        for key, value in request.query_params.multi_items():
            query.setdefault(key, []).append(value)
    return {
        "hook": hook,
        "method": request.method,
        "path": _path_of(request),
        "query": _flatten(query),
        "headers": headers,
    }


#: Characters for which ``request.url.path`` differs from the scope's path: Starlette escapes the first three, and
#: URL parsing drops the others.
_PATH_REWRITTEN: Final = frozenset("?#\\\t\r\n")


def _path_of(request: Request) -> str:
    """Return ``request.url.path`` without building the URL (a parse and a rebuild) when it is the scope's path."""
    path: str = request.scope["path"]
    if path.startswith("/") and not path.startswith("//") and _PATH_REWRITTEN.isdisjoint(path):
        return path
    return request.url.path


def stored_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return *event* as the run history keeps it: the parsed form (or JSON) *or* the raw body, never both.

    Threat: a megabyte form post stored twice over, once parsed and once raw, by anyone who can reach an unsigned
    hook. The run history caps what remains (``zingyconn.history``).
    """
    if event.get("form") is None and event.get("json") is None:
        return event
    return {**event, "body": None}


def _flatten(values: dict[str, list[str]]) -> dict[str, str | list[str]]:
    return {key: items[0] if len(items) == 1 else items for key, items in values.items()}


def _json_body(request: Request, body: bytes) -> Any:
    media_type = _media_type(request)
    if not body or not (media_type == "application/json" or media_type.endswith("+json")):
        return None
    return parse_json(body, strict=False)  # not JSON at all: None, and the snippet still has the raw body


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _run(
    runtime: Runtime, hook: Hook, event: dict[str, Any], token: str | None, is_twilio: bool
) -> tuple[StoredResponse, bool]:
    """Run the hook; return its response and whether it failed for a reason a retry may not meet (transient)."""
    key = None if token is None else f"webhook:{hook.name}:{token}"
    result = runtime.run(
        hook.tenant,
        hook.source,
        event=event,
        kind="webhook",
        limits=hook.run_limits(),
        name=hook.name,
        idempotency_key=key,
        stored_event=stored_event(event),
        version=hook.version,
        isolation=hook.isolation,
    )
    error = None if result.error is None else result.error.to_json()
    rendered = render(result.ok, result.value, result.error, run_id=result.run_id, is_twilio=is_twilio)
    return rendered, is_transient(error, list(result.egress))


def render(ok: bool, value: Any, error: RunError | None, *, run_id: str | None, is_twilio: bool) -> StoredResponse:
    """Turn a run's outcome into the HTTP response (see the module docstring for the rules)."""
    if not ok:
        error = error or RunError.of(SandboxError, "The run failed.")
        status = 504 if error.is_a(TimeLimitExceededError) else 500
        details = {"type": error.type, "message": error.message, "line": error.line, "run_id": run_id}
        if error.exception is not None:
            details["exception"] = error.exception
        return StoredResponse(status, "application/json", _dumps({"ok": False, "error": details}), run_id)
    if value is None:
        if is_twilio:
            return StoredResponse(200, "text/xml", EMPTY_TWIML, run_id)
        return StoredResponse(204, "", b"", run_id)
    if isinstance(value, str):
        return StoredResponse(200, media_type_of(value), value.encode(), run_id)
    return StoredResponse(200, "application/json", _dumps(value), run_id)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


ROUTES: Final = [Route("/hooks/{tenant}/{hook}", handle_hook, methods=["GET", "POST"], name="hook")]
