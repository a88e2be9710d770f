"""The JSON API: connection commands for cloud flows (tenant tokens) and hook administration (admin token).

- ``POST /api/v1/connections/{name}/commands/{command}``: ``Authorization: Bearer <tenant token>``, the flow named
  by ``X-Zingy-Flow: cloud|page``, the command's inputs as the JSON body, an optional ``Idempotency-Key``;
  answers ``{"ok": true, "result": ...}``.
  A page flow (a browser) is refused with 403 before anything runs: a browser would need the token, and with it
  the right to send SMS on the tenant's account, so commands are a server-side (cloud) capability only. A request
  that carries ``Origin`` or ``Sec-Fetch-Mode`` (sent by browsers, not by server-side HTTP clients) is a page flow,
  whatever it claims.
- ``GET /api/v1/admin/tenants/{tenant}/hooks`` and ``PUT|GET|DELETE .../hooks/{name}`` with
  ``Authorization: Bearer <admin token>``; PUT takes ``{"source", "verify_with", "limits"}``.
"""

from __future__ import annotations

import hmac
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zingyconn.errors import FlowNotAllowedError, ValidationError, ZingyConnError
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


class UnauthorizedError(ZingyConnError):
    """Raised when a request has no valid Bearer token for what it asks (HTTP 401)."""

    http_status = 401


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Send the API token as 'Authorization: Bearer <token>'.")
    return token.strip()


async def _json_object(request: Request) -> dict[str, Any]:
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
    inputs = await _json_object(request)
    name, command = request.path_params["name"], request.path_params["command"]
    key = request.headers.get(IDEMPOTENCY_HEADER) or None
    async with state.limiter.slot(tenant):
        result = await state.in_thread(
            lambda: state.runtime.command(
                tenant, name, command, inputs, flow="cloud", idempotency_key=key, actor=f"token:{token_id(token)}"
            )
        )
    return JSONResponse({"ok": True, "result": result})


def _check_admin(request: Request) -> None:
    expected = host_state(request).admin_token
    if expected is None:
        raise UnauthorizedError("The admin API is disabled: start the server with ZINGYCONN_ADMIN_TOKEN set.")
    # Constant-time compare: the admin token is a shared secret, not a digest lookup.
    if not hmac.compare_digest(_bearer(request).encode(), expected.encode()):
        raise UnauthorizedError("The admin token is not valid.")


async def list_hooks(request: Request) -> Response:
    """List a tenant's hooks."""
    _check_admin(request)
    state = host_state(request)
    hooks = await state.in_thread(state.catalog.list_hooks, request.path_params["tenant"])
    return JSONResponse({"ok": True, "hooks": [hook.to_json() for hook in hooks]})


async def hook_item(request: Request) -> Response:
    """Create/replace (PUT), show (GET) or delete (DELETE) one hook."""
    _check_admin(request)
    state = host_state(request)
    tenant, name = request.path_params["tenant"], request.path_params["name"]
    if request.method == "GET":
        hook = await state.in_thread(state.catalog.get_hook, tenant, name)
        return JSONResponse({"ok": True, "hook": hook.to_json()})
    if request.method == "DELETE":
        await state.in_thread(state.catalog.delete_hook, tenant, name)
        return JSONResponse({"ok": True})
    data = await _json_object(request)
    source, verify_with, limits = data.get("source"), data.get("verify_with"), data.get("limits") or {}
    if not isinstance(source, str):
        raise ValidationError("'source' must be the snippet as a string.", field="source")
    if verify_with is not None and not isinstance(verify_with, str):
        raise ValidationError("'verify_with' must be a connection name or null.", field="verify_with")
    if not isinstance(limits, dict):
        raise ValidationError("'limits' must be an object of limit names to numbers.", field="limits")
    if verify_with is not None:
        await state.in_thread(check_verifier, state.runtime.store, tenant, verify_with)
    hook = await state.in_thread(
        lambda: state.catalog.put_hook(tenant, name, source, verify_with=verify_with, limits=limits)
    )
    return JSONResponse({"ok": True, "hook": hook.to_json()})


ROUTES: Final = [
    Route("/api/v1/connections/{name}/commands/{command}", run_command, methods=["POST"], name="api_command"),
    Route("/api/v1/admin/tenants/{tenant}/hooks", list_hooks, methods=["GET"], name="api_hooks"),
    Route(
        "/api/v1/admin/tenants/{tenant}/hooks/{name}",
        hook_item,
        methods=["GET", "PUT", "DELETE"],
        name="api_hook",
    ),
]
