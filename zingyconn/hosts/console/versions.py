"""Console pages for the versions of a hook or script: the history, a diff of two versions, and rollback.

A rollback is a POST with the CSRF token, confirmed in the page, written to the audit trail, and saves the old
version again as the newest one (so it is itself undone by rolling back to the version before it).
"""

from __future__ import annotations

from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from zingyconn.catalog import SnippetKind, SnippetVersion
from zingyconn.errors import NotFoundError, ZingyConnError
from zingyconn.hosts.console import auth
from zingyconn.hosts.console.view import audit, flash, page, render, state_of, when

#: The kinds the ``{item_kind}`` path segment may name.
KINDS: Final[dict[str, SnippetKind]] = {"hook": "hook", "script": "script"}


def author_of(request: Request) -> str:
    """Who a version saved through the console names as its author (``console:operator``, ``console:token <id>``)."""
    principal = auth.current_principal(request)
    return f"console:{principal.actor if principal is not None else 'anonymous'}"


def _item(request: Request) -> tuple[SnippetKind, str]:
    """Return the (kind, name) the path names; 404 for a kind that is not versioned."""
    kind = KINDS.get(request.path_params["item_kind"])
    if kind is None:
        raise HTTPException(404, "Only hooks and scripts have versions.")
    return kind, request.path_params["name"]


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _diff_lines(text: str) -> list[tuple[str, str]]:
    """Split a unified diff into (css class, line) pairs for the page."""
    classes = {"+": "add", "-": "del", "@": "hunk"}
    return [
        ("head" if line.startswith(("+++", "---")) else classes.get(line[:1], "same"), line)
        for line in text.splitlines()
    ]


@page()
async def versions(request: Request, tenant: str, form: FormData) -> Response:
    """List the versions of a hook or script, and show the diff of two of them (``?from=N&to=M``)."""
    kind, name = _item(request)
    catalog = state_of(request).catalog
    try:
        found: list[SnippetVersion] = await run_in_threadpool(catalog.versions, kind, tenant, name)
    except NotFoundError as exc:
        flash(request, "error", str(exc))
        return RedirectResponse(str(request.url_for(f"console_{kind}s", tenant=tenant)), 303)
    numbers = [version.version for version in found]
    new = _number(request.query_params.get("to"))
    new = new if new in numbers else numbers[0]
    old = _number(request.query_params.get("from"))
    old = old if old in numbers else max(1, new - 1) if new - 1 in numbers else new
    text = await run_in_threadpool(catalog.diff, kind, tenant, name, old, new)
    rows = [
        {
            "version": version.version,
            "author": version.author,
            "message": version.message or "",
            "when": when(version.created_at),
            "current": version is found[0],
        }
        for version in found
    ]
    context = {
        "tenant": tenant,
        "nav": f"{kind}s",
        "kind": kind,
        "name": name,
        "versions": rows,
        "old": old,
        "new": new,
        "diff": _diff_lines(text),
    }
    return render(request, "versions.html", context)


@page()
async def rollback(request: Request, tenant: str, form: FormData) -> Response:
    """Save an old version again as the newest (POST ``to=N``; CSRF checked by :func:`page`, audited)."""
    kind, name = _item(request)
    to = _number(str(form.get("to") or ""))
    target = str(request.url_for("console_versions", tenant=tenant, item_kind=kind, name=name))
    if to is None:
        flash(request, "error", "Pick the version to roll back to.")
        return RedirectResponse(target, 303)
    author = author_of(request)
    try:
        version = await run_in_threadpool(
            lambda: state_of(request).catalog.rollback(kind, tenant, name, to=to, author=author)
        )
    except ZingyConnError as exc:
        flash(request, "error", str(exc))
        return RedirectResponse(target, 303)
    await audit(request, f"{kind}.rollback", tenant=tenant, target=name, to=to, version=version)
    flash(request, "ok", f"Rolled {kind} {name!r} back to version {to}; saved as version {version}.")
    return RedirectResponse(target, 303)
