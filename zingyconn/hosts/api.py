"""The JSON API: connection commands for cloud flows (tenant tokens) and hook administration (admin token).

- ``POST /api/v1/connections/{name}/commands/{command}``: ``Authorization: Bearer <tenant token>``, the flow named
  by ``X-Zingy-Flow: cloud|page``, the command's inputs as the JSON body, an optional ``Idempotency-Key``;
  answers ``{"ok": true, "result": ...}``.
  A page flow (a browser) is refused with 403 before anything runs: a browser would need the token, and with it
  the right to send SMS on the tenant's account, so commands are a server-side (cloud) capability only. A request
  that carries ``Origin`` or ``Sec-Fetch-Mode`` (sent by browsers, not by server-side HTTP clients) is a page flow,
  whatever it claims.
- ``GET /api/v1/admin/tenants/{tenant}/hooks`` and ``PUT|GET|DELETE .../hooks/{name}`` with
  ``Authorization: Bearer <admin token>``; PUT takes ``{"source", "verify_with", "limits", "message"}`` and saves the
  hook's next version.
- Versions of hooks and scripts (admin token; ``FAMILY`` is ``hooks`` or ``scripts``):
  ``GET .../tenants/{tenant}/FAMILY/{name}/versions`` (newest first, without sources),
  ``GET .../FAMILY/{name}/versions/{version}`` (with its source), ``GET .../FAMILY/{name}/diff?from=N&to=M``
  (``{"diff": "<unified diff>"}``) and ``POST .../FAMILY/{name}/rollback`` with ``{"to": N}`` (saves version N again
  as the newest; answers ``{"version": <new number>}``).

Every change of a hook or script here (a PUT, a DELETE, a rollback) is recorded in the audit trail as the console's
are: actor ``admin-api``, the client's address, the name and version numbers; never a source.
"""

from __future__ import annotations

import hmac
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zingyconn.catalog import SnippetKind
from zingyconn.errors import FlowNotAllowedError, NotFoundError, ValidationError, ZingyConnError
from zingyconn.hosts.bodies import parse_json
from zingyconn.hosts.middleware import read_body
from zingyconn.hosts.state import host_state
from zingyconn.hosts.webhooks import check_verifier
from zingyconn.secrets.tokens import token_id

FLOW_HEADER: Final = "x-zingy-flow"
FLOWS: Final = ("cloud", "page")
#: Optional: the same key within 24 h sends one message, however often the call is retried.
IDEMPOTENCY_HEADER: Final = "idempotency-key"
#: Headers only browsers send: their presence means a page flow, whatever X-Zingy-Flow claims.
BROWSER_HEADERS: Final = ("origin", "sec-fetch-mode")
#: Who the version history names as the author of a change made with the (shared) admin token.
ADMIN_AUTHOR: Final = "admin-api"
#: The path segment of each versioned kind.
FAMILIES: Final[dict[str, SnippetKind]] = {"hooks": "hook", "scripts": "script"}


class UnauthorizedError(ZingyConnError):
    """Raised when a request has no valid Bearer token for what it asks (HTTP 401)."""

    http_status = 401


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Send the API token as 'Authorization: Bearer <token>'.")
    return token.strip()


async def json_object(request: Request) -> dict[str, Any]:
    """Return the request's JSON object body (``{}`` when empty); ValidationError for any other JSON value."""
    state = host_state(request)
    body = await read_body(request, max_bytes=state.max_body_bytes)
    if not body.strip():
        return {}
    value = await state.parse_in_thread(parse_json, body)
    if not isinstance(value, dict):
        raise ValidationError("The request body must be a JSON object.", field="body")
    return value


async def run_command(request: Request) -> Response:
    """Run a connection command for the token's tenant (cloud flows only)."""
    state = host_state(request)
    token = _bearer(request)
    tenant = await state.in_thread(state.tokens.tenant_for, token)
    if tenant is None:
        raise UnauthorizedError("The API token is not valid (unknown or revoked).")
    request.state.tenant = tenant
    flow = request.headers.get(FLOW_HEADER, "").strip().lower()
    if flow not in FLOWS:
        raise ValidationError(f"Name the calling flow with 'X-Zingy-Flow: cloud' (got {flow!r}).", field="X-Zingy-Flow")
    if flow == "page" or any(name in request.headers for name in BROWSER_HEADERS):
        raise FlowNotAllowedError(
            "Connection commands are not allowed from a page (browser) flow; run them from a cloud flow."
        )
    inputs = await json_object(request)
    name, command = request.path_params["name"], request.path_params["command"]
    key = request.headers.get(IDEMPOTENCY_HEADER) or None
    async with state.limiter.slot(tenant):
        result = await state.in_thread(
            lambda: state.runtime.command(
                tenant, name, command, inputs, flow="cloud", idempotency_key=key, actor=f"token:{token_id(token)}"
            )
        )
    return JSONResponse({"ok": True, "result": result})


async def audit_admin(request: Request, action: str, *, tenant: str, target: str, **detail: Any) -> None:
    """Record a change made through the admin API as actor ``admin-api`` (names only, never a secret or a value)."""
    state = host_state(request)
    client = state.public_url.client_address(request)
    await state.in_thread(
        lambda: state.audit.record(
            actor=ADMIN_AUTHOR, action=action, tenant=tenant, target=target, client=client, detail=detail
        )
    )


def check_admin(request: Request) -> None:
    """Refuse (UnauthorizedError, 401) a request without the admin token, or any request when none is set."""
    expected = host_state(request).admin_token
    if expected is None:
        raise UnauthorizedError("The admin API is disabled: start the server with ZINGYCONN_ADMIN_TOKEN set.")
    # Constant-time compare: the admin token is a shared secret, not a digest lookup.
    if not hmac.compare_digest(_bearer(request).encode(), expected.encode()):
        raise UnauthorizedError("The admin token is not valid.")


async def list_hooks(request: Request) -> Response:
    """List a tenant's hooks."""
    check_admin(request)
    state = host_state(request)
    hooks = await state.in_thread(state.catalog.list_hooks, request.path_params["tenant"])
    return JSONResponse({"ok": True, "hooks": [hook.to_json() for hook in hooks]})


async def hook_item(request: Request) -> Response:
    """Create/replace (PUT), show (GET) or delete (DELETE) one hook."""
    check_admin(request)
    state = host_state(request)
    tenant, name = request.path_params["tenant"], request.path_params["name"]
    if request.method == "GET":
        hook = await state.in_thread(state.catalog.get_hook, tenant, name)
        return JSONResponse({"ok": True, "hook": hook.to_json()})
    if request.method == "DELETE":
        await state.in_thread(state.catalog.delete_hook, tenant, name)
        await audit_admin(request, "hook.delete", tenant=tenant, target=name)
        return JSONResponse({"ok": True})
    data = await json_object(request)
    source, verify_with, limits = data.get("source"), data.get("verify_with"), data.get("limits") or {}
    if not isinstance(source, str):
        raise ValidationError("'source' must be the snippet as a string.", field="source")
    if verify_with is not None and not isinstance(verify_with, str):
        raise ValidationError("'verify_with' must be a connection name or null.", field="verify_with")
    if not isinstance(limits, dict):
        raise ValidationError("'limits' must be an object of limit names to numbers.", field="limits")
    message, isolation = data.get("message"), data.get("isolation")
    if message is not None and not isinstance(message, str):
        raise ValidationError("'message' must be a string or null.", field="message")
    if isolation is not None and not isinstance(isolation, str):
        raise ValidationError('\'isolation\' must be "run", "instance" or null (run).', field="isolation")
    if verify_with is not None:
        await state.in_thread(check_verifier, state.runtime.store, tenant, verify_with)
    hook = await state.in_thread(
        lambda: state.catalog.put_hook(
            tenant,
            name,
            source,
            verify_with=verify_with,
            limits=limits,
            author=ADMIN_AUTHOR,
            message=message,
            isolation=isolation,
        )
    )
    await audit_admin(request, "hook.save", tenant=tenant, target=name, version=hook.version)
    return JSONResponse({"ok": True, "hook": hook.to_json()})


def _versioned(request: Request) -> tuple[SnippetKind, str, str]:
    """Check the admin token; return (kind, tenant, name) of the versioned hook or script the path names."""
    check_admin(request)
    family = request.path_params["family"]
    if family not in FAMILIES:
        raise NotFoundError(f"There is no {family!r} to version; the path names 'hooks' or 'scripts'.")
    return FAMILIES[family], request.path_params["tenant"], request.path_params["name"]


def _version_number(value: object, *, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(f"{field!r} must be a version number (1, 2, ...).", field=field)
    try:
        number = int(value)
    except ValueError:
        raise ValidationError(f"{field!r} must be a version number (1, 2, ...), not {value!r}.", field=field) from None
    if number < 1:
        raise ValidationError(f"{field!r} must be a version number (1, 2, ...), not {number}.", field=field)
    return number


async def list_versions(request: Request) -> Response:
    """List the saved versions of a hook or script, newest first (without their sources)."""
    kind, tenant, name = _versioned(request)
    state = host_state(request)
    found = await state.in_thread(state.catalog.versions, kind, tenant, name)
    return JSONResponse({"ok": True, "versions": [version.to_json(with_source=False) for version in found]})


async def show_version(request: Request) -> Response:
    """Show one saved version of a hook or script, with its source."""
    kind, tenant, name = _versioned(request)
    number = _version_number(request.path_params["version"], field="version")
    state = host_state(request)
    found = await state.in_thread(state.catalog.version, kind, tenant, name, number)
    return JSONResponse({"ok": True, "version": found.to_json()})


async def diff_versions(request: Request) -> Response:
    """The unified diff between two versions (``?from=N&to=M``; default: the current one and the one before)."""
    kind, tenant, name = _versioned(request)
    state = host_state(request)
    query = request.query_params
    if "to" in query:
        new = _version_number(query["to"], field="to")
    else:
        new = (await state.in_thread(state.catalog.versions, kind, tenant, name))[0].version
    old = _version_number(query["from"], field="from") if "from" in query else max(1, new - 1)
    text = await state.in_thread(state.catalog.diff, kind, tenant, name, old, new)
    return JSONResponse({"ok": True, "from": old, "to": new, "diff": text})


async def rollback(request: Request) -> Response:
    """Save an old version of a hook or script again, as its newest version."""
    kind, tenant, name = _versioned(request)
    to = _version_number((await json_object(request)).get("to"), field="to")
    state = host_state(request)
    version = await state.in_thread(lambda: state.catalog.rollback(kind, tenant, name, to=to, author=ADMIN_AUTHOR))
    await audit_admin(request, f"{kind}.rollback", tenant=tenant, target=name, to=to, version=version)
    return JSONResponse({"ok": True, "version": version})


ROUTES: Final = [
    Route("/api/v1/connections/{name}/commands/{command}", run_command, methods=["POST"], name="api_command"),
    Route("/api/v1/admin/tenants/{tenant}/hooks", list_hooks, methods=["GET"], name="api_hooks"),
    Route(
        "/api/v1/admin/tenants/{tenant}/hooks/{name}",
        hook_item,
        methods=["GET", "PUT", "DELETE"],
        name="api_hook",
    ),
    Route("/api/v1/admin/tenants/{tenant}/{family}/{name}/versions", list_versions, methods=["GET"]),
    Route("/api/v1/admin/tenants/{tenant}/{family}/{name}/versions/{version}", show_version, methods=["GET"]),
    Route("/api/v1/admin/tenants/{tenant}/{family}/{name}/diff", diff_versions, methods=["GET"]),
    Route("/api/v1/admin/tenants/{tenant}/{family}/{name}/rollback", rollback, methods=["POST"]),
]
