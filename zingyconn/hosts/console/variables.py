"""Console page for tenant variables: list, set and unset the plain values snippets read as ``zingyConn.vars``."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from zingyconn.errors import ValidationError, ZingyConnError
from zingyconn.hosts.console.view import audit, flash, page, render, state_of, when


@page(nav="vars")
async def variables(request: Request, tenant: str, form: FormData) -> Response:
    """List the tenant's variables with a set form."""
    return await _variables_page(request, tenant, {})


async def _variables_page(request: Request, tenant: str, values: Mapping[str, str], *, status: int = 200) -> Response:
    listed = await run_in_threadpool(state_of(request).runtime.variables.list, tenant)
    rows = [{"name": v.name, "value": v.value, "updated": when(v.updated_at)} for v in listed]
    edit = request.query_params.get("edit")
    if edit and not values:
        values = {"name": edit, "value": next((v.value for v in listed if v.name == edit), "")}
    context = {"tenant": tenant, "nav": "vars", "variables": rows, "form": values}
    return render(request, "vars.html", context, status_code=status)


@page(nav="vars")
async def variable_save(request: Request, tenant: str, form: FormData) -> Response:
    """Set a variable (creating or replacing it); audited with its name, never its value."""
    name = str(form.get("name") or "").strip()
    value = str(form.get("value") or "")
    try:
        await run_in_threadpool(state_of(request).runtime.variables.set, tenant, name, value)
    except ZingyConnError as exc:
        flash(request, "error", str(exc))
        status = 400 if isinstance(exc, ValidationError) else 500
        return await _variables_page(request, tenant, {"name": name, "value": value}, status=status)
    await audit(request, "variable.set", tenant=tenant, target=name)
    flash(request, "ok", f"Set variable {name!r}.")
    return RedirectResponse(str(request.url_for("console_vars", tenant=tenant)), 303)


@page(nav="vars")
async def variable_delete(request: Request, tenant: str, form: FormData) -> Response:
    """Unset a variable."""
    name = request.path_params["name"]
    try:
        await run_in_threadpool(state_of(request).runtime.variables.unset, tenant, name)
        await audit(request, "variable.unset", tenant=tenant, target=name)
        flash(request, "ok", f"Unset variable {name!r}.")
    except ZingyConnError as exc:
        flash(request, "error", str(exc))
    return RedirectResponse(str(request.url_for("console_vars", tenant=tenant)), 303)
