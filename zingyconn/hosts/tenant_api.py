"""The admin API's tenant settings: connections (their secrets write-only) and variables, beside the hooks of api.py.

Every route takes ``Authorization: Bearer <admin token>`` and answers the one JSON error shape. Every change is
recorded in the audit trail as the console's are (actor ``admin-api``, the client's address, names only: never a
secret, nor a variable's value).

- ``GET /api/v1/admin/tenants/{tenant}/connections``: the summaries ``zingyconn connections list --json`` prints
  (type, masked SIDs, key id, revision; no record is decrypted);
- ``GET .../connections/{name}``: one summary with the profile's masked view (``connections show --json``);
- ``PUT .../connections/{name}``: add or replace a connection. The body is ``{"type": "twilio" | "http",
  "secret": "..."}`` and the fields of ``connections add`` under the names the profile (and its validation errors'
  ``field``) uses, :data:`FIELDS`; the profile is built by the same code as the CLI's and validated by the store, so
  a bad field is a 400 naming it. The secret is required on every PUT: keeping the stored one while the base URL
  changes would let the caller send it to a host of its choosing.
- ``DELETE .../connections/{name}``; ``POST .../connections/{name}/test``: one authenticated read, as
  ``connections test`` does (``{"ok": true, "answered": "..."}``; a refusal or no answer is the error shape, 502 or
  503);
- ``GET .../vars``, ``PUT .../vars/{name}`` with ``{"value": "..."}`` and ``DELETE .../vars/{name}``: as
  ``zingyconn vars list|set|unset``, with the same caps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zingyconn.connection_types import Profile
from zingyconn.errors import ValidationError
from zingyconn.hosts.api import audit_admin, check_admin, json_object
from zingyconn.hosts.state import HostState, host_state
from zingyconn.http.profile import HttpProfile
from zingyconn.twilio.profile import TwilioProfile

_TEXT: Final = "a string"
_TEXTS: Final = "a list of strings"
_FLAG: Final = "true or false"

#: The body fields of a PUT of each connection type, besides ``type``, with the JSON they take: the options of
#: ``connections add`` under the profile's own field names. ``null`` is the same as leaving a field out.
FIELDS: Final[Mapping[str, Mapping[str, str]]] = {
    "twilio": {"account_sid": _TEXT, "api_key": _TEXT, "secret": _TEXT},
    "http": {
        "base_url": _TEXT,
        "auth": _TEXT,
        "secret": _TEXT,
        "allowed_methods": _TEXTS,
        "allowed_prefixes": _TEXTS,
        "local_test_target": _FLAG,
        "token_url": _TEXT,
        "client_id": _TEXT,
        "scope": _TEXT,
    },
}


def _admin(request: Request) -> tuple[HostState, str]:
    """Check the admin token; return the host state and the tenant the path names."""
    check_admin(request)
    return host_state(request), request.path_params["tenant"]


def _checked_fields(data: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return the connection type and the non-null fields of a PUT body, each of the JSON kind :data:`FIELDS` says.

    Raises:
        ValidationError: An unknown type or field, or a field of the wrong kind (the message never echoes a value).
    """
    type_ = data.get("type")
    if not isinstance(type_, str) or type_ not in FIELDS:
        raise ValidationError(
            f"'type' must be one of {', '.join(map(repr, FIELDS))}: the kind of connection to save.", field="type"
        )
    known = FIELDS[type_]
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if key == "type" or value is None:
            continue
        if key not in known:
            raise ValidationError(
                f"{key!r} is not a field of a {type_} connection; its fields are {', '.join(known)}.", field=key
            )
        kind = known[key]
        if (
            (kind == _TEXT and not isinstance(value, str))
            or (kind == _FLAG and not isinstance(value, bool))
            or (kind == _TEXTS and not (isinstance(value, list) and all(isinstance(item, str) for item in value)))
        ):
            raise ValidationError(f"{key!r} must be {kind}.", field=key)
        fields[key] = value
    return type_, fields


def _profile(type_: str, fields: Mapping[str, Any]) -> Profile:
    """Build the profile *fields* describe, as ``connections add`` does (validated when the store saves it)."""
    secret = str(fields.get("secret", ""))
    if type_ == "twilio":
        api_key = str(fields.get("api_key", "")).strip() or None
        return TwilioProfile(account_sid=str(fields.get("account_sid", "")).strip(), api_key=api_key, secret=secret)
    return HttpProfile.from_options(
        base_url=fields.get("base_url", ""),
        auth=fields.get("auth", ""),
        secret=secret,
        methods=fields.get("allowed_methods", ()),
        prefixes=fields.get("allowed_prefixes", ()),
        local_test_target=fields.get("local_test_target", False),
        token_url=fields.get("token_url"),
        client_id=fields.get("client_id"),
        scope=fields.get("scope"),
    )


def _shown(state: HostState, tenant: str, name: str) -> dict[str, Any]:
    """Connection *name* as ``connections show --json`` prints it: its summary and masked profile, no secret."""
    store = state.runtime.store
    return {**dataclasses.asdict(store.describe(tenant, name)), **store.get(tenant, name).masked()}


async def list_connections(request: Request) -> Response:
    """List a tenant's connections (summaries: names, types, masked SIDs; never a secret)."""
    state, tenant = _admin(request)
    summaries = await state.in_thread(state.runtime.store.list, tenant)
    return JSONResponse({"ok": True, "connections": [dataclasses.asdict(summary) for summary in summaries]})


async def connection_item(request: Request) -> Response:
    """Show (GET, masked), add or replace (PUT) or delete (DELETE) one connection."""
    state, tenant = _admin(request)
    name = request.path_params["name"]
    if request.method == "GET":
        return JSONResponse({"ok": True, "connection": await state.in_thread(_shown, state, tenant, name)})
    if request.method == "DELETE":
        await state.in_thread(state.runtime.store.delete, tenant, name)
        await audit_admin(request, "connection.delete", tenant=tenant, target=name)
        return JSONResponse({"ok": True})
    type_, fields = _checked_fields(await json_object(request))
    revision = await state.in_thread(state.runtime.store.put, tenant, name, _profile(type_, fields))
    await audit_admin(request, "connection.save", tenant=tenant, target=name, type=type_, edited=revision > 1)
    return JSONResponse({"ok": True, "connection": await state.in_thread(_shown, state, tenant, name)})


async def connection_test(request: Request) -> Response:
    """Make one authenticated read with a connection (``connections test``) and say what answered."""
    state, tenant = _admin(request)
    answered = await state.in_thread(state.runtime.test_connection, tenant, request.path_params["name"])
    return JSONResponse({"ok": True, "answered": answered})


async def list_variables(request: Request) -> Response:
    """List a tenant's variables with their values (they are not secrets)."""
    state, tenant = _admin(request)
    listed = await state.in_thread(state.runtime.variables.list, tenant)
    return JSONResponse({"ok": True, "variables": [variable.to_json() for variable in listed]})


async def variable_item(request: Request) -> Response:
    """Set (PUT ``{"value": "..."}``) or unset (DELETE) one variable."""
    state, tenant = _admin(request)
    name, variables = request.path_params["name"], state.runtime.variables
    if request.method == "DELETE":
        await state.in_thread(variables.unset, tenant, name)
        await audit_admin(request, "variable.unset", tenant=tenant, target=name)
        return JSONResponse({"ok": True})
    data = await json_object(request)
    if "value" not in data:
        raise ValidationError('Send the variable\'s value as {"value": "..."}.', field="value")
    variable = await state.in_thread(variables.set, tenant, name, data["value"])
    await audit_admin(request, "variable.set", tenant=tenant, target=name)
    return JSONResponse({"ok": True, "variable": variable.to_json()})


ROUTES: Final = [
    Route("/api/v1/admin/tenants/{tenant}/connections", list_connections, methods=["GET"], name="api_connections"),
    Route(
        "/api/v1/admin/tenants/{tenant}/connections/{name}",
        connection_item,
        methods=["GET", "PUT", "DELETE"],
        name="api_connection",
    ),
    Route("/api/v1/admin/tenants/{tenant}/connections/{name}/test", connection_test, methods=["POST"]),
    Route("/api/v1/admin/tenants/{tenant}/vars", list_variables, methods=["GET"], name="api_vars"),
    Route("/api/v1/admin/tenants/{tenant}/vars/{name}", variable_item, methods=["PUT", "DELETE"], name="api_var"),
]
