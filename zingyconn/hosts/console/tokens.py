"""The console's API tokens page: a tenant's tokens (ids and labels, never the tokens), create one, revoke one.

A new token is shown once, in the answer to the POST that made it, and never stored in the session cookie (which
is signed, not encrypted) or anywhere else: only its SHA-256 is kept. Creating and revoking are audited by id.
"""

from __future__ import annotations

from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from zingyconn.errors import ZingyConnError
from zingyconn.hosts.console.view import audit, flash, page, render, state_of, when
from zingyconn.secrets.tokens import token_id

#: Longest label kept (the column width).
MAX_LABEL_LENGTH: Final = 100


async def _render(request: Request, tenant: str, *, created: str | None = None) -> Response:
    found = await run_in_threadpool(state_of(request).tokens.list, tenant)
    rows = [{"id": info.token_id, "label": info.label or "", "created": when(info.created_at)} for info in found]
    return render(request, "tokens.html", {"tenant": tenant, "nav": "tokens", "tokens": rows, "created": created})


@page(nav="tokens")
async def tokens(request: Request, tenant: str, form: FormData) -> Response:
    """List the tenant's API tokens (ids and labels only)."""
    return await _render(request, tenant)


@page(nav="tokens")
async def token_create(request: Request, tenant: str, form: FormData) -> Response:
    """Create a token and show it once, in this answer only."""
    label = str(form.get("label") or "").strip()[:MAX_LABEL_LENGTH] or None
    token = await run_in_threadpool(lambda: state_of(request).tokens.create(tenant, label=label))
    await audit(request, "token.create", tenant=tenant, target=token_id(token), label=label)
    return await _render(request, tenant, created=token)


@page(nav="tokens")
async def token_revoke(request: Request, tenant: str, form: FormData) -> Response:
    """Revoke a token by id; the console sessions it opened end with it."""
    identifier = request.path_params["token_id"]
    try:
        await run_in_threadpool(state_of(request).tokens.revoke, tenant, identifier)
    except ZingyConnError as exc:
        flash(request, "error", str(exc))
    else:
        await audit(request, "token.revoke", tenant=tenant, target=identifier)
        flash(request, "ok", f"Revoked token {identifier}; API calls and console sessions with it stop working now.")
    return RedirectResponse(str(request.url_for("console_tokens", tenant=tenant)), 303)
