"""The console's Tasks page: a tenant's background tasks by state, each attempt with its error; retry and cancel.

Retry re-queues a failed or cancelled task under its own id (so messages it already sent are not sent again);
cancel stops a queued or retrying task from being claimed. Both are POSTs with the CSRF token, audited.
"""

from __future__ import annotations

from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from zingyconn.errors import NotFoundError, ZingyConnError
from zingyconn.hosts.console.view import audit, flash, page, render, state_of, when
from zingyconn.tasks.store import CANCELLABLE, RERUNNABLE, TaskRecord

#: The states the page filters on.
TASK_STATES: Final = ("queued", "running", "retrying", "succeeded", "failed", "cancelled")
#: Most tasks the page lists (newest first).
MAX_TASKS_SHOWN: Final = 100


@page(nav="tasks")
async def tasks(request: Request, tenant: str, form: FormData) -> Response:
    """List the tenant's tasks, newest first, filtered by state, with every attempt's run and error."""
    state = request.query_params.get("state") or None
    state = state if state in TASK_STATES else None
    store, history = state_of(request).tasks, state_of(request).runtime.history
    records = await run_in_threadpool(lambda: store.recent(tenant, state=state, limit=MAX_TASKS_SHOWN))

    def attempts(record: TaskRecord) -> list[dict[str, object]]:
        runs = history.list(tenant, task_id=record.id, limit=20)
        return [
            {"run_id": run.id, "attempt": run.attempt, "status": run.status, "error": run.error or {}}
            for run in sorted(runs, key=lambda run: run.attempt)
        ]

    rows = [
        {
            "id": record.id,
            "script": record.script,
            "state": record.state,
            "attempts": record.attempts,
            "source": record.source,
            "created": when(record.created_at),
            "error": record.error or {},
            "runs": await run_in_threadpool(attempts, record),
            "can_cancel": record.state in CANCELLABLE,
            "can_retry": record.state in RERUNNABLE,
        }
        for record in records
    ]
    context = {"tenant": tenant, "nav": "tasks", "tasks": rows, "states": TASK_STATES, "state": state}
    return render(request, "tasks.html", context)


@page(nav="tasks")
async def task_action(request: Request, tenant: str, form: FormData) -> Response:
    """Retry (``action=retry``) or cancel (``action=cancel``) one of the tenant's tasks."""
    store, task_id = state_of(request).tasks, request.path_params["task_id"]
    action = str(form.get("action") or "")
    target = str(request.url_for("console_tasks", tenant=tenant))
    try:
        record = await run_in_threadpool(store.get, task_id)
        if record.tenant != tenant:  # another tenant's task is not found, the same as none
            raise NotFoundError(f"Tenant {tenant!r} has no task {task_id!r}.")
        if action == "cancel":
            await run_in_threadpool(store.cancel, task_id)
        elif action == "retry":
            await run_in_threadpool(store.rerun, task_id)
        else:
            flash(request, "error", "Choose retry or cancel.")
            return RedirectResponse(target, 303)
    except ZingyConnError as exc:
        flash(request, "error", str(exc))
        return RedirectResponse(target, 303)
    await audit(request, f"task.{action}", tenant=tenant, target=record.script, task_id=task_id)
    done = "Cancelled" if action == "cancel" else "Re-queued"
    flash(request, "ok", f"{done} task {task_id} (script {record.script!r}).")
    return RedirectResponse(target, 303)
